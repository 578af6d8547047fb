-- A stock branch's whole work as one statement, so the branch can travel to the server in one
-- round trip with its opening and its PREPARE TRANSACTION. A refusal is raised with SQLSTATE
-- WR000 (twopc::branch::REFUSE): the message is the refusal's, the detail its code.
create function stock_take(ids text[], quantities bigint[]) returns void
language plpgsql as $$
declare
    line record;
begin
    -- A first look without locks refuses at once what cannot succeed: a committed stock below
    -- the quantity only grows again through an addition (a prepared branch that rolls back never
    -- had its decrement committed). So a checkout of a sold-out hot item never queues behind
    -- that item's row lock only to be refused.
    for line in
        select w.id, w.quantity, items.stock
        from unnest(ids, quantities) with ordinality as w(id, quantity, position)
        left join items on items.id = w.id
        order by w.position
    loop
        if line.stock is null then
            raise exception using errcode = 'WR000', detail = 'unknown_item',
                message = format('item %s does not exist', line.id);
        elsif line.stock < line.quantity then
            raise exception using errcode = 'WR000', detail = 'out_of_stock',
                message = format('item %s has %s left, %s wanted', line.id, line.stock, line.quantity);
        end if;
    end loop;
    -- Every row locked in id order, the lock order every checkout follows (so two checkouts never
    -- wait for each other in a cycle), and checked as it is once locked: the latest committed.
    for line in
        select items.id, w.quantity, items.stock
        from items join unnest(ids, quantities) as w(id, quantity) on items.id = w.id
        order by items.id
        for update of items
    loop
        if line.stock < line.quantity then
            raise exception using errcode = 'WR000', detail = 'out_of_stock',
                message = format('item %s has %s left, %s wanted', line.id, line.stock, line.quantity);
        end if;
    end loop;
    update items set stock = items.stock - w.quantity
    from unnest(ids, quantities) as w(id, quantity)
    where items.id = w.id;
end
$$;
