-- An order branch's whole work as one statement, so the branch can travel to the server in one
-- round trip with its opening and its PREPARE TRANSACTION. The order is paid only for the
-- transaction that holds its checkout claim, at the version it was priced at. A refusal is
-- raised with SQLSTATE WR000 for a business refusal or WR001 for a transient one
-- (twopc::branch::REFUSE, REFUSE_TRANSIENT): the message is the refusal's, the detail its code.
create function order_pay(paid_id text, priced_version bigint, txid uuid) returns void
language plpgsql as $$
declare
    current record;
begin
    update orders set paid = true
    where orders.id = paid_id and not orders.paid and orders.version = priced_version
          and orders.checkout_txid = txid;
    if found then
        return;
    end if;
    select orders.paid, orders.version into current from orders where orders.id = paid_id;
    if not found then
        raise exception using errcode = 'WR000', detail = 'unknown_order',
            message = format('order %s not found', to_json(paid_id));
    elsif current.paid then
        raise exception using errcode = 'WR000', detail = 'already_paid',
            message = 'order is already paid';
    elsif current.version <> priced_version then
        raise exception using errcode = 'WR001', detail = 'order_changed',
            message = 'items were added to the order during checkout, try again';
    else
        raise exception using errcode = 'WR001', detail = 'superseded',
            message = 'another checkout of this order took over, try again';
    end if;
end
$$;
