-- A payment branch's whole work as one statement, so the branch can travel to the server in one
-- round trip with its opening and its PREPARE TRANSACTION. A refusal is raised with SQLSTATE
-- WR000 (twopc::branch::REFUSE): the message is the refusal's, the detail its code.
create function payment_charge(user_id text, amount bigint) returns void
language plpgsql as $$
declare
    left_over bigint;
begin
    -- The row is locked by the update, which checks the credit as it is once locked.
    update users set credit = users.credit - amount
    where users.id = user_id and users.credit >= amount;
    if found then
        return;
    end if;
    select users.credit into left_over from users where users.id = user_id;
    if not found then
        raise exception using errcode = 'WR000', detail = 'unknown_user',
            message = format('unknown user %s', user_id);
    end if;
    raise exception using errcode = 'WR000', detail = 'insufficient_credit',
        message = format('user %s has credit %s, %s wanted', user_id, left_over, amount);
end
$$;
