-- Abort records ("fences"). Presumed abort needs no record for an abort, but a coordinator
-- that did not start a transaction cannot presume anything about it: the transaction's own
-- coordinator may still be about to log its commit. So whoever must know for sure (a peer
-- finishing a stopped coordinator's branches, a status question after the transaction's
-- deadline, the operators' CLI) inserts an abort record under the txid. The primary key
-- decides between it and the commit decision: whichever lands first is the outcome, and the
-- loser sees the winner. A fence is finished at once (nothing to do in phase two).
alter table decisions
    add column outcome text not null default 'commit' check (outcome in ('commit', 'abort'));
