-- A lone checkout's stock branch as cheap as before batches came (0004). Measured in the
-- database (20,000 calls, one member with two lines): stock_take_batch took 0.6 ms a call where
-- 0003's stock_take took 0.17. Most of it went to stock_first_short: a SQL function that is not
-- inlined is planned again on every call (PL/pgSQL keeps its statements' plans), and its window
-- sum, which only several members need, was run for one. Now:
-- - one line (one member, one item) is one UPDATE;
-- - one member's lines are checked without the window sum (the participant refuses a work that
--   names an item twice, so each line stands alone);
-- - several members' lines are checked with it, in the function's own statement.
create or replace function stock_take_batch(member_of bigint[], ids text[], quantities bigint[])
returns void
language plpgsql as $$
declare
    short record;
    locked boolean := false;
    -- Members are numbered from 0 in order, so the last line's is 0 only when there is one.
    alone boolean := member_of[cardinality(member_of)] = 0;
begin
    -- One line: the two passes below in one statement. In read committed an UPDATE's scan skips
    -- a row whose committed version fails the condition without waiting for its lock, and checks
    -- a row it waited for again as it is once locked. No row: unknown or short, and the passes
    -- below say which (or take it, if stock came in meanwhile).
    if cardinality(ids) = 1 then
        update items set stock = items.stock - quantities[1]
        where items.id = ids[1] and items.stock >= quantities[1];
        if found then
            return;
        end if;
    end if;
    loop
        -- The first pass looks without locks and refuses at once what cannot succeed: a
        -- committed stock below what a member wants only grows again through an addition (a
        -- prepared branch that rolls back never had its decrement committed). So a checkout of a
        -- sold-out hot item never queues behind that item's row lock only to be refused. The
        -- second pass checks the rows as they are once locked: the latest committed.
        if alone then
            select 0::bigint as member, w.id, w.quantity, items.stock as stock_left
            into short
            from unnest(ids, quantities) with ordinality as w(id, quantity, position)
            left join items on items.id = w.id
            where items.stock is null or items.stock < w.quantity
            order by w.position
            limit 1;
        else
            -- Each line against the stock the members before its own take.
            select line.member, line.id, line.quantity, line.stock - line.taken_before
                as stock_left
            into short
            from (
                select w.member, w.id, w.quantity, w.position, items.stock,
                       sum(w.quantity) over (partition by w.id order by w.position) - w.quantity
                           as taken_before
                from unnest(member_of, ids, quantities)
                    with ordinality as w(member, id, quantity, position)
                left join items on items.id = w.id
            ) as line
            where line.stock is null or line.stock - line.taken_before < line.quantity
            order by line.position
            limit 1;
        end if;
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

drop function stock_first_short(bigint[], text[], bigint[]);
