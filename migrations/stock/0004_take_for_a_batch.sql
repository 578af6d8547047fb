-- A batch's stock branch in one statement too: the members' works in order, all or none, so
-- every stock branch travels to the server in one round trip with its opening and its PREPARE
-- TRANSACTION, whatever its number of members. The line arrays hold every member's lines, the
-- members one after another (member_of says whose line it is, 0 for the first member); a lone
-- checkout is a batch of one. A refusal is raised with SQLSTATE WR000 (twopc::branch::REFUSE):
-- the message is the refusal's, the detail its code, the hint the refused member's position.

-- The first line that the stock cannot cover once the members before its own have taken theirs,
-- as the stock reads at this statement's snapshot; no row when every member fits. An unknown item
-- has a null stock.
create function stock_first_short(member_of bigint[], ids text[], quantities bigint[])
returns table (member bigint, id text, quantity bigint, stock_left bigint)
language sql stable as $$
    select line.member, line.id, line.quantity, line.stock - line.taken_before
    from (
        select w.member, w.id, w.quantity, w.position, items.stock,
               sum(w.quantity) over (partition by w.id order by w.position) - w.quantity
                   as taken_before
        from unnest(member_of, ids, quantities) with ordinality as w(member, id, quantity, position)
        left join items on items.id = w.id
    ) as line
    where line.stock is null or line.stock - line.taken_before < line.quantity
    order by line.position
    limit 1
$$;

create function stock_take_batch(member_of bigint[], ids text[], quantities bigint[]) returns void
language plpgsql as $$
declare
    short record;
    locked boolean := false;
begin
    loop
        -- The first pass looks without locks and refuses at once what cannot succeed: a
        -- committed stock below what a member wants only grows again through an addition (a
        -- prepared branch that rolls back never had its decrement committed). So a checkout of a
        -- sold-out hot item never queues behind that item's row lock only to be refused. The
        -- second pass checks the rows as they are once locked: the latest committed.
        select * into short from stock_first_short(member_of, ids, quantities);
        if short.member is not null and short.stock_left is null then
            raise exception using errcode = 'WR000', detail = 'unknown_item',
                message = format('item %s does not exist', short.id), hint = short.member;
        elsif short.member is not null then
            raise exception using errcode = 'WR000', detail = 'out_of_stock',
                message = format('item %s has %s left, %s wanted',
                                 short.id, short.stock_left, short.quantity),
                hint = short.member;
        end if;
        exit when locked;
        -- Every row locked in id order, the lock order every checkout follows (so two
        -- checkouts never wait for each other in a cycle).
        perform 1 from items where items.id = any(ids) order by items.id for update;
        locked := true;
    end loop;
    update items set stock = items.stock - taken.total
    from (select w.id, sum(w.quantity) as total
          from unnest(ids, quantities) as w(id, quantity) group by w.id) as taken
    where items.id = taken.id;
end
$$;

drop function stock_take(text[], bigint[]);
