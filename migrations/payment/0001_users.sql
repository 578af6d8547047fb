-- Users and their credit. The check constraint is the last line of defence; every statement
-- that lowers credit already guards with `credit >= amount`.
create table users (
    id     text primary key,
    credit bigint not null check (credit >= 0)
);

-- The two-phase-commit marker table (twopc::branch::MARKER_TABLE): a branch inserts its gid
-- right before PREPARE TRANSACTION, so the marker exists if and only if the branch committed.
create table twopc_markers (
    gid        text primary key,
    created_at timestamptz not null default now()
);
create index twopc_markers_created_at on twopc_markers (created_at);
