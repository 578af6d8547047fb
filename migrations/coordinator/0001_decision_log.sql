-- The coordinator's durable decision log (presumed abort: only commits are logged).
--
-- A row is written, with synchronous_commit on, after every branch voted yes and before any
-- branch is told to commit: that write is the commit point. `finished_at` is set lazily once
-- every branch committed; recovery finishes what a crash left open.
create table decisions (
    txid         uuid primary key,
    coordinator  text        not null,
    -- participant names in prepare order, comma-separated ([a-z0-9-] names, no commas)
    participants text        not null,
    decided_at   timestamptz not null default now(),
    finished_at  timestamptz
);

create index decisions_unfinished on decisions (coordinator, decided_at) where finished_at is null;
create index decisions_finished on decisions (finished_at) where finished_at is not null;

-- A logged commit whose branch is neither prepared nor marked committed: the decision cannot
-- be honoured on that participant. Never guessed away; an operator resolves it.
create table hazards (
    gid          text primary key,
    txid         uuid        not null,
    participant  text        not null,
    detected_at  timestamptz not null default now(),
    resolved_at  timestamptz,
    note         text
);

-- What operators forced by hand (recovery CLI), with their reason.
create table operator_actions (
    id      bigserial primary key,
    at      timestamptz not null default now(),
    gid     text        not null,
    action  text        not null,
    forced  boolean     not null,
    reason  text
);
