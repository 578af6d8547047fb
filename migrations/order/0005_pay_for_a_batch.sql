-- A batch's order branch in one statement too: every member's order paid, all or none, so every
-- order branch travels to the server in one round trip with its opening and its PREPARE
-- TRANSACTION, whatever its number of members. An order is paid only for the transaction that
-- holds its checkout claim, at the version it was priced at; a lone checkout is a batch of one.
-- A refusal is raised with SQLSTATE WR000 for a business refusal or WR001 for a transient one
-- (twopc::branch::REFUSE, REFUSE_TRANSIENT): the message is the refusal's, the detail its code,
-- the hint the refused member's position (0 for the first).
create function order_pay_batch(paid_ids text[], priced_versions bigint[], txid uuid)
returns void
language plpgsql as $$
declare
    unpaid record;
begin
    -- The order rows need no common lock order: each is claimed by this very transaction, so no
    -- other branch waits for it.
    with paid as (
        update orders set paid = true
        from unnest(paid_ids, priced_versions) as w(id, version)
        where orders.id = w.id and not orders.paid and orders.version = w.version
              and orders.checkout_txid = txid
        returning orders.id
    )
    select w.position - 1 as member, w.id, orders.id is not null as known,
           orders.paid, orders.version <> w.version as changed
    into unpaid
    from unnest(paid_ids, priced_versions) with ordinality as w(id, version, position)
    left join orders on orders.id = w.id
    where w.id not in (select paid.id from paid)
    order by w.position
    limit 1;
    if unpaid.member is null then
        return;
    elsif not unpaid.known then
        raise exception using errcode = 'WR000', detail = 'unknown_order',
            message = format('order %s not found', to_json(unpaid.id)), hint = unpaid.member;
    elsif unpaid.paid then
        raise exception using errcode = 'WR000', detail = 'already_paid',
            message = 'order is already paid', hint = unpaid.member;
    elsif unpaid.changed then
        raise exception using errcode = 'WR001', detail = 'order_changed',
            message = 'items were added to the order during checkout, try again',
            hint = unpaid.member;
    else
        raise exception using errcode = 'WR001', detail = 'superseded',
            message = 'another checkout of this order took over, try again',
            hint = unpaid.member;
    end if;
end
$$;

drop function order_pay(text, bigint, uuid);
