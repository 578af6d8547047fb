-- Items for sale and their stock. The check constraints are the last line of defence; every
-- statement that lowers stock already guards with `stock >= amount`.
create table items (
    id    text primary key,
    stock bigint not null check (stock >= 0),
    price bigint not null check (price >= 0)
);

-- The two-phase-commit marker table (twopc::branch::MARKER_TABLE): a branch inserts its gid
-- right before PREPARE TRANSACTION, so the marker exists if and only if the branch committed.
create table twopc_markers (
    gid        text primary key,
    created_at timestamptz not null default now()
);
create index twopc_markers_created_at on twopc_markers (created_at);
