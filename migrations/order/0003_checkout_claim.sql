-- A checkout belongs to its order: before a transaction is handed to a coordinator, its txid
-- and deadline are written here (compare-and-set, so one order has at most one transaction in
-- flight). Any later checkout of the order, on any instance and after any restart, follows
-- that transaction to its outcome instead of starting a second one; the order branch pays the
-- order only for the txid recorded here. Cleared when the transaction aborted.
alter table orders
    add column checkout_txid uuid,
    -- milliseconds since the Unix epoch (twopc::Deadline)
    add column checkout_deadline bigint;
