-- A branch is prepared only before the deadline its coordinator sent: the marker carries the
-- deadline and its insertion time (the clock at the row, not the transaction's start), and the
-- check refuses the insert, and with it the PREPARE TRANSACTION that follows in the same query
-- string, once the deadline has passed. So a coordinator that gave up on a vote knows when
-- "not prepared" is final, even if the participant process was stopped mid-request.
alter table twopc_markers
    add column prepare_by timestamptz,
    alter column created_at set default clock_timestamp(),
    add constraint twopc_markers_prepared_in_time check (prepare_by is null or created_at < prepare_by);
