-- Orders. `items` keeps one [item_id, quantity] pair per addItem call, in call order, as the
-- public API returns it; `version` counts addItem calls so a checkout can tell that the order
-- it priced is still the order it charges.
create table orders (
    id          text    primary key,
    user_id     text    not null,
    paid        boolean not null default false,
    items       jsonb   not null default '[]'::jsonb,
    total_cost  bigint  not null default 0 check (total_cost >= 0),
    version     bigint  not null default 0
);

-- Two-phase-commit markers: a branch's gid, written in the branch's own transaction before
-- PREPARE TRANSACTION, so it exists if and only if the branch committed.
create table twopc_markers (
    gid         text        primary key,
    created_at  timestamptz not null default now()
);
create index twopc_markers_created_at on twopc_markers (created_at);
