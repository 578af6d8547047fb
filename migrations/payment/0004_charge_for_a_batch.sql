-- A batch's payment branch in one statement too: the members' charges in order, all or none, so
-- every payment branch travels to the server in one round trip with its opening and its PREPARE
-- TRANSACTION, whatever its number of members (a user may pay for several of them). A lone
-- checkout, and POST /payment/pay, is a batch of one. A refusal is raised with SQLSTATE WR000
-- (twopc::branch::REFUSE): the message is the refusal's, the detail its code, the hint the
-- refused member's position (0 for the first).
create function payment_charge_batch(user_ids text[], amounts bigint[]) returns void
language plpgsql as $$
declare
    short record;
begin
    -- Every user locked in id order, the lock order every checkout follows, then checked as it
    -- is once locked: the first member whose user cannot pay once the members before it have.
    perform 1 from users where users.id = any(user_ids) order by users.id for update;
    select line.member, line.user_id, line.amount, line.credit - line.paid_before as credit_left
    into short
    from (
        select w.position - 1 as member, w.user_id, w.amount, w.position, users.credit,
               sum(w.amount) over (partition by w.user_id order by w.position) - w.amount
                   as paid_before
        from unnest(user_ids, amounts) with ordinality as w(user_id, amount, position)
        left join users on users.id = w.user_id
    ) as line
    where line.credit is null or line.credit - line.paid_before < line.amount
    order by line.position
    limit 1;
    if short.member is not null and short.credit_left is null then
        raise exception using errcode = 'WR000', detail = 'unknown_user',
            message = format('unknown user %s', short.user_id), hint = short.member;
    elsif short.member is not null then
        raise exception using errcode = 'WR000', detail = 'insufficient_credit',
            message = format('user %s has credit %s, %s wanted',
                             short.user_id, short.credit_left, short.amount),
            hint = short.member;
    end if;
    update users set credit = users.credit - paid.total
    from (select w.user_id, sum(w.amount) as total
          from unnest(user_ids, amounts) as w(user_id, amount) group by w.user_id) as paid
    where users.id = paid.user_id;
end
$$;

drop function payment_charge(text, bigint);
