//! Checkout through the real gateway, coordinator and participants.

use std::time::Duration;

use reqwest::StatusCode;
use system_tests::{
    arm_coordinator_failpoint, claim, connect, epoch_ms, keep_peer_coordinators_down, ledger,
    metric_sum, order_of_two, restart_coordinator_clean, start, wait_nothing_prepared, wait_until,
    Api, DatabaseReader, Service, CONSISTENCY_STOCK, CONSISTENCY_USERS,
};

#[tokio::test]
async fn order_scenario_of_the_classic_template() {
    let system = start().await;
    let api = Api::new(&system);
    let user = api.create_user().await;
    let item1 = api.create_item(10).await;
    let item2 = api.create_item(10).await;
    api.ok(&format!("/stock/add/{item1}/15")).await;
    api.ok(&format!("/stock/add/{item2}/1")).await;
    let order = api.create_order(&user).await;
    api.ok(&format!("/orders/addItem/{order}/{item1}/1")).await;
    api.ok(&format!("/orders/addItem/{order}/{item2}/1")).await;
    api.ok(&format!("/stock/subtract/{item2}/1")).await;

    // Out of stock: nothing changes, not even the other item.
    let (status, body) = api.post(&format!("/orders/checkout/{order}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(api.item(&item1).await.stock, 15);
    assert!(!api.order(&order).await.paid);

    // Out of credit.
    api.ok(&format!("/stock/add/{item2}/15")).await;
    api.ok(&format!("/payment/add_funds/{user}/15")).await;
    assert_eq!(api.checkout(&order).await, StatusCode::BAD_REQUEST);
    assert_eq!(api.item(&item1).await.stock, 15);
    assert_eq!(api.item(&item2).await.stock, 15);
    assert_eq!(api.user(&user).await.credit, 15);

    // Enough of everything.
    api.ok(&format!("/payment/add_funds/{user}/10")).await;
    assert_eq!(api.checkout(&order).await, StatusCode::OK);
    assert_eq!(api.item(&item1).await.stock, 14);
    assert_eq!(api.item(&item2).await.stock, 14);
    assert_eq!(api.user(&user).await.credit, 5);
    assert!(api.order(&order).await.paid);
    wait_nothing_prepared(&system, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn checking_out_a_paid_order_again_charges_nothing() {
    let system = start().await;
    let api = Api::new(&system);
    let user = api.user_with_credit(100).await;
    let item = api.item_in_stock(7, 10).await;
    let order = api.order_of(&user, &[(&item, 2), (&item, 1)]).await;

    assert_eq!(api.checkout(&order).await, StatusCode::OK);
    assert_eq!(api.checkout(&order).await, StatusCode::OK);
    assert_eq!(
        api.item(&item).await.stock,
        7,
        "quantities of one item are summed once"
    );
    assert_eq!(api.user(&user).await.credit, 100 - 21);
    // A paid order takes no more items.
    let (status, _) = api.post(&format!("/orders/addItem/{order}/{item}/1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn concurrent_checkouts_of_one_order_charge_exactly_once() {
    let system = start().await;
    let api = Api::new(&system);
    let user = api.user_with_credit(1000).await;
    let item = api.item_in_stock(3, 1000).await;
    let order = api.order_of(&user, &[(&item, 1)]).await;

    let orders = vec![order.clone(); 20];
    let results = system_tests::run_checkouts(&api, &orders, 20).await;
    // Each duplicate either finds the order paid or follows the transaction that claimed it
    // to its commit: the order ended up paid, so a 4xx to any of them would be false.
    for (_, status) in &results {
        assert_eq!(*status, StatusCode::OK);
    }
    assert!(api.order(&order).await.paid);
    assert_eq!(api.user(&user).await.credit, 997);
    assert_eq!(api.item(&item).await.stock, 999);
}

/// The order branch locks only the order its transaction claimed, so it is prepared alongside
/// payment and stock instead of before them: with the order database's marker table locked,
/// the order branch waits while both others get prepared, and the checkout commits once the
/// lock is gone.
#[tokio::test]
async fn the_order_branch_is_prepared_alongside_the_others() {
    let system = start().await;
    let api = Api::new(&system);
    let user = api.user_with_credit(10).await;
    let item = api.item_in_stock(4, 5).await;
    let order = api.order_of(&user, &[(&item, 2)]).await;

    let mut blocker = connect(&system, Service::Order).await;
    sqlx::query("begin").execute(&mut blocker).await.unwrap();
    sqlx::query("lock table twopc_markers in exclusive mode")
        .execute(&mut blocker)
        .await
        .unwrap();
    let checkout = api.spawn_checkout(&order);
    // Well inside the branches' 5 s deadline.
    wait_until(
        "payment and stock prepared while the order branch waits",
        Duration::from_secs(3),
        || async {
            let prepared = "select count(*) from pg_prepared_xacts";
            system.scalar_i64(Service::Payment, prepared).await == 1
                && system.scalar_i64(Service::Stock, prepared).await == 1
        },
    )
    .await;
    sqlx::query("rollback").execute(&mut blocker).await.unwrap();

    assert_eq!(checkout.await.unwrap(), StatusCode::OK);
    assert!(api.order(&order).await.paid);
    assert_eq!(api.user(&user).await.credit, 2);
    assert_eq!(api.item(&item).await.stock, 3);
    wait_nothing_prepared(&system, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_order_without_items_checks_out_for_free() {
    let system = start().await;
    let api = Api::new(&system);
    let user = api.create_user().await;
    let order = api.create_order(&user).await;
    assert_eq!(api.checkout(&order).await, StatusCode::OK);
    assert!(api.order(&order).await.paid);
}

#[tokio::test]
async fn a_checkout_for_an_unknown_user_is_refused() {
    let system = start().await;
    let api = Api::new(&system);
    let item = api.item_in_stock(1, 5).await;
    let order = api.order_of("nobody", &[(&item, 1)]).await;
    assert_eq!(api.checkout(&order).await, StatusCode::BAD_REQUEST);
    assert_eq!(api.item(&item).await.stock, 5);
    assert!(!api.order(&order).await.paid);
}

/// An order instance that saw an item refused out of stock refuses the next checkout of it
/// after one look at its stock, without a transaction, and changes nothing; once the item is
/// restocked, the look lets the checkout through.
#[tokio::test]
async fn an_item_seen_sold_out_is_refused_without_a_transaction_until_restocked() {
    let system = start().await;
    let api = Api::new(&system);
    let item = api.item_in_stock(1, 1).await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let user = api.user_with_credit(10).await;
        let order = api.order_of(&user, &[(&item, 1)]).await;
        orders.push((user, order));
    }
    // Straight to one instance: what it saw is its own.
    let order_1 = Service::Order.instance_process(1);
    let direct = system.instance_url(&order_1).expect("order-1").to_owned();
    let http = reqwest::Client::new();
    let checkout = |order: &str| {
        let request = http.post(format!("{direct}/orders/checkout/{order}"));
        async move {
            let response = request.send().await.expect("checkout");
            (response.status(), response.text().await.unwrap_or_default())
        }
    };
    let transactions = || async {
        let mut total = 0.0;
        for coordinator in system.processes(Service::Coordinator) {
            total += metric_sum(&system, &coordinator, "twopc_transactions_total", "").await;
        }
        total
    };
    let looks = |result: &'static str| {
        let order_1 = order_1.clone();
        let system = &system;
        async move {
            let labels = format!("result=\"{result}\"");
            metric_sum(system, &order_1, "checkout_stock_looks_total", &labels).await
        }
    };

    assert_eq!(checkout(&orders[0].1).await.0, StatusCode::OK);
    // Refused by the stock branch of a transaction: the instance remembers the item.
    assert_eq!(checkout(&orders[1].1).await.0, StatusCode::BAD_REQUEST);
    let (before, short_before) = (transactions().await, looks("short").await);
    let (status, body) = checkout(&orders[2].1).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("0 left"), "{body}");
    assert_eq!(transactions().await, before, "no transaction was run");
    assert_eq!(looks("short").await, short_before + 1.0);
    assert!(!api.order(&orders[2].1).await.paid);
    assert_eq!(api.user(&orders[2].0).await.credit, 10);
    let claim: Option<uuid::Uuid> =
        sqlx::query_scalar("select checkout_txid from orders where id = $1")
            .bind(&orders[2].1)
            .fetch_one(&mut connect(&system, Service::Order).await)
            .await
            .expect("claim");
    assert_eq!(claim, None, "the refused checkout released its claim");

    api.ok(&format!("/stock/add/{item}/1")).await;
    let enough_before = looks("enough").await;
    assert_eq!(checkout(&orders[2].1).await.0, StatusCode::OK);
    assert_eq!(looks("enough").await, enough_before + 1.0);
    assert!(api.order(&orders[2].1).await.paid);
    assert_eq!(api.user(&orders[2].0).await.credit, 9);
    assert_eq!(api.item(&item).await.stock, 0);
    wait_nothing_prepared(&system, Duration::from_secs(5)).await;
}

/// The course's consistency test: one hot item, users with several orders, 100 in flight.
/// An order instance that stops after claiming an order and before handing the transaction
/// to a coordinator leaves a claim that no coordinator has heard of. The retry of the
/// checkout fences that transaction off once no coordinator has heard of it for a moment,
/// and runs its own; it does not wait out the claim's deadline, which here lies past the
/// whole checkout's budget, so waiting it out would end in a 503.
#[tokio::test]
async fn a_claim_no_coordinator_has_heard_of_is_fenced_off_and_the_checkout_goes_on() {
    let system = start().await;
    let api = Api::new(&system);
    let bought = order_of_two(&api).await;

    let lost = uuid::Uuid::new_v4();
    claim(
        &mut connect(&system, Service::Order).await,
        &bought.order,
        lost,
    )
    .await;

    assert_eq!(api.checkout(&bought.order).await, StatusCode::OK);
    bought.assert_paid_once(&api).await;
    let fenced = system_tests::scalar_i64(
        &system,
        Service::Coordinator,
        &format!("select count(*) from decisions where txid = '{lost}' and outcome = 'abort'"),
    )
    .await;
    assert_eq!(
        fenced, 1,
        "the lost transaction is fenced off, so it can never commit"
    );
}

/// A checkout that claimed its order for a batch and was cancelled before handing its work
/// over leaves the claim of a transaction that commits without it. A later checkout that
/// follows that transaction must not take its commit for this order's.
#[tokio::test]
async fn a_claim_left_by_a_batch_that_committed_without_the_order_is_not_taken_for_its_commit() {
    let system = start().await;
    let api = Api::new(&system);
    let paid = order_of_two(&api).await.order;
    assert_eq!(api.checkout(&paid).await, StatusCode::OK);
    let mut db = connect(&system, Service::Order).await;
    let committed: uuid::Uuid =
        sqlx::query_scalar("select checkout_txid from orders where id = $1")
            .bind(&paid)
            .fetch_one(&mut db)
            .await
            .unwrap();

    let bought = order_of_two(&api).await;
    claim(&mut db, &bought.order, committed).await;

    assert_eq!(api.checkout(&bought.order).await, StatusCode::OK);
    // Not paid would be a 200 for an order left unpaid.
    bought.assert_paid_once(&api).await;
}

/// Checkouts that share a transaction are done one after another, so a refusal of any but
/// the first member may only say what the members before it took. Each user here has two
/// orders, each costing all of the user's credit: one can never commit (its item has no
/// stock), the other always can. Whenever the hopeless one is charged first in a batch, the
/// other is refused "not enough credit" for a charge that never commits: that refusal must
/// not reach the client.
#[tokio::test]
async fn a_refusal_that_only_says_what_other_members_of_a_batch_took_is_not_the_answer() {
    let system = start().await;
    let api = Api::new(&system);
    let none = api.create_item(10).await;
    let some = api.item_in_stock(10, 1000).await;
    let mut hopeless = Vec::new();
    let mut possible = Vec::new();
    for _ in 0..40 {
        let user = api.user_with_credit(10).await;
        for (item, orders) in [(&none, &mut hopeless), (&some, &mut possible)] {
            orders.push(api.order_of(&user, &[(item, 1)]).await);
        }
    }
    let mut checkouts = tokio::task::JoinSet::new();
    for order in hopeless.iter().zip(&possible).flat_map(|(a, b)| [a, b]) {
        let (api, order) = (api.clone(), order.clone());
        checkouts.spawn(async move { (api.checkout(&order).await, order) });
    }
    while let Some(reply) = checkouts.join_next().await {
        let (status, order) = reply.unwrap();
        let expected = if possible.contains(&order) {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(status, expected, "order {order}");
    }
    assert_eq!(api.item(&some).await.stock, 960);
}

#[tokio::test]
async fn consistency_scenario_is_exact() {
    let system = start().await;
    let api = Api::new(&system);
    let scenario = system_tests::consistency(&api).await;
    let results = system_tests::run_checkouts(&api, &scenario.orders, 100).await;

    let ok = results.iter().filter(|(_, s)| *s == StatusCode::OK).count();
    let refused = results.iter().filter(|(_, s)| s.is_client_error()).count();
    assert_eq!((ok, refused), (100, 900));
    assert_eq!(api.item(&scenario.item).await.stock, 0);
    let credit = ledger(&system, CONSISTENCY_STOCK, CONSISTENCY_USERS).await;
    assert_eq!(CONSISTENCY_USERS - credit.credit_spent, 900);
    system_tests::assert_consistency_exact(&system, api.client(), &results).await;
    wait_nothing_prepared(&system, Duration::from_secs(5)).await;
}

/// A transaction as the order service hands it to a coordinator: one stock branch.
fn stock_transaction(txid: &str, item: &str, deadline_ms: i64) -> serde_json::Value {
    serde_json::json!({
        "txid": txid,
        "branches": [{
            "participant": "stock",
            "work": {"items": [{"item_id": item, "quantity": 1}]},
        }],
        "deadline": deadline_ms,
        "reply_by": deadline_ms + 1_000,
    })
}

/// Hands transaction `request` to the coordinator at `base`, as an order instance does;
/// returns its outcome.
async fn run_transaction(api: &Api, base: &str, request: &serde_json::Value) -> serde_json::Value {
    let request = api.http.post(format!("{base}{TRANSACTIONS}")).json(request);
    coordinator_reply(request).await
}

/// Asks the coordinator at `base` for transaction `txid`'s outcome, with `query`
/// (`deadline=…`, `fence=true`).
async fn transaction_status(api: &Api, base: &str, txid: &str, query: &str) -> serde_json::Value {
    let request = api.http.get(format!("{base}{TRANSACTIONS}/{txid}?{query}"));
    coordinator_reply(request).await
}

const TRANSACTIONS: &str = "/_2pc/transactions";

async fn coordinator_reply(request: reqwest::RequestBuilder) -> serde_json::Value {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_caller_that_lost_its_reply_learns_the_true_outcome_from_any_coordinator() {
    let system = start().await;
    let api = Api::new(&system);
    let coordinators = system.processes(system_tests::Service::Coordinator);
    let [first, second] = [&coordinators[0], &coordinators[1]]
        .map(|name| system.instance_url(name).unwrap().to_owned());

    // A business refusal is remembered with its reason: a lost reply must not turn a 400 into
    // a 409.
    let refused = uuid::Uuid::new_v4().to_string();
    let request = stock_transaction(&refused, "no-such-item", epoch_ms(5_000));
    let outcome = run_transaction(&api, &first, &request).await;
    assert_eq!(outcome["outcome"], "aborted");
    assert_eq!(outcome["code"], "unknown_item");
    assert_eq!(outcome["business"], true);
    let deadline = request["deadline"].as_i64().unwrap();
    let status = transaction_status(&api, &first, &refused, &format!("deadline={deadline}")).await;
    assert_eq!(status, outcome, "the coordinator that ran it remembers why");

    // A committed transaction is committed for every coordinator (the shared log).
    let item = api.item_in_stock(1, 1).await;
    let committed = uuid::Uuid::new_v4().to_string();
    let request = stock_transaction(&committed, &item, epoch_ms(5_000));
    let outcome = run_transaction(&api, &first, &request).await;
    assert_eq!(outcome["outcome"], "committed");
    let status = transaction_status(&api, &second, &committed, "deadline=1").await;
    assert_eq!(status["outcome"], "committed", "{status}");

    // A transaction nobody decided is unknown until its deadline has settled, or until a
    // caller asks to fence it, then fenced off as aborted by whichever coordinator is asked;
    // it can never commit after that.
    let ahead = epoch_ms(60_000);
    api.ok(&format!("/stock/add/{item}/1")).await;
    for fencing in [
        "deadline=1".to_owned(),
        format!("deadline={ahead}&fence=true"),
    ] {
        let unknown = uuid::Uuid::new_v4().to_string();
        let status =
            transaction_status(&api, &second, &unknown, &format!("deadline={ahead}")).await;
        assert_eq!(status["outcome"], "unknown");
        let status = transaction_status(&api, &second, &unknown, &fencing).await;
        assert_eq!(status["outcome"], "aborted", "{fencing}: {status}");
        assert_eq!(status["business"], false);
        let late = stock_transaction(&unknown, &item, epoch_ms(5_000));
        let outcome = run_transaction(&api, &first, &late).await;
        assert_eq!(
            outcome["outcome"], "aborted",
            "{fencing}: a fenced transaction cannot commit"
        );
        assert_eq!(api.item(&item).await.stock, 1, "and it changed nothing");
    }
    wait_nothing_prepared(&system, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_transaction_sent_twice_runs_once_and_both_callers_get_its_outcome() {
    let system = start().await;
    let api = Api::new(&system);
    let coordinators = system.processes(system_tests::Service::Coordinator);
    let base = system.instance_url(&coordinators[0]).unwrap();
    let item = api.item_in_stock(1, 5).await;
    let txid = uuid::Uuid::new_v4().to_string();
    let request = stock_transaction(&txid, &item, epoch_ms(5_000));
    let send = || run_transaction(&api, base, &request);
    // The repeat either waits for the running first one or is answered from memory: both
    // callers learn the one outcome (a refusal of the repeat would read as "not applied").
    let (first, second) = tokio::join!(send(), send());
    assert_eq!(first["outcome"], "committed", "{first}");
    assert_eq!(second, first);
    let again = send().await;
    assert_eq!(again, first, "a later repeat is answered, not run");
    assert_eq!(api.item(&item).await.stock, 4, "taken exactly once");
}

/// A checkout whose phase two is slow (a branch's `COMMIT PREPARED` held for 10 s, past the
/// coordinator's reply wait) is answered 200 only once every branch is committed: a read right
/// after the 200 sees the order paid, the credit charged and the stock taken.
#[tokio::test]
async fn a_checkout_with_a_slow_phase_two_answers_200_only_once_its_writes_are_visible() {
    let system = start().await;
    let api = Api::new(&system);
    let bought = order_of_two(&api).await;
    arm_coordinator_failpoint(&system, "hold_branch_commit").await;
    // The peer would finish the branch by recovery meanwhile and hide the fault.
    keep_peer_coordinators_down(&system).await;
    assert_eq!(api.checkout(&bought.order).await, StatusCode::OK);
    bought
        .assert_settled(&api, true, "read after the 200")
        .await;
    restart_coordinator_clean(&system);
    wait_nothing_prepared(&system, Duration::from_secs(30)).await;
}

/// A proxy that takes the first request sent through it and closes the connection without an
/// answer (what a keep-alive connection closed by the other side as the request arrives looks
/// like to its client), then forwards every later connection to `upstream`. It records the
/// gid of every prepare it sees.
struct CutFirst {
    url: String,
    gids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CutFirst {
    async fn start(upstream: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let gids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = gids.clone();
        let task = tokio::spawn(async move {
            let mut cut = false;
            while let Ok((mut client, _)) = listener.accept().await {
                let mut request = Vec::new();
                let gid = loop {
                    let mut chunk = [0u8; 8192];
                    let read =
                        tokio::time::timeout(Duration::from_secs(10), client.read(&mut chunk));
                    match read.await {
                        Ok(Ok(n)) if n > 0 => request.extend_from_slice(&chunk[..n]),
                        _ => break None,
                    }
                    if let Some(gid) = gid_in(&request) {
                        break Some(gid);
                    }
                };
                let Some(gid) = gid else { continue };
                seen.lock().unwrap().push(gid);
                if !cut {
                    cut = true;
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    if server.write_all(&request).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        CutFirst { url, gids, task }
    }
}

impl Drop for CutFirst {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The gid of a prepare request (`{"gid":"…",…}`) once its bytes have arrived.
fn gid_in(request: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(request);
    let start = text.find("\"gid\":\"")? + "\"gid\":\"".len();
    let length = text[start..].find('"')?;
    Some(text[start..start + length].to_owned())
}

/// A prepare whose connection is closed after the request went out and before any answer
/// (the race of a keep-alive connection closed by the other side) is sent again with the same
/// gid, and the transaction commits: a repeated prepare votes as before, so resending is safe,
/// and giving up would abort a checkout for nothing. A coordinator of its own (identity `c9`,
/// the system's decision log) is pointed at stock through the proxy.
#[tokio::test]
async fn a_prepare_cut_off_before_its_answer_is_sent_again_with_the_same_gid() {
    let system = start().await;
    let api = Api::new(&system);
    let item = api.item_in_stock(1, 5).await;
    let proxy = CutFirst::start(&system.internal_url(Service::Stock).unwrap()).await;
    let port = launcher::ports::free_port().unwrap();
    let bin_dir = std::env::var(launcher::system::BIN_DIR_VAR).expect("WDM_BIN_DIR");
    let _coordinator = tokio::process::Command::new(
        std::path::Path::new(&bin_dir).join(Service::Coordinator.binary()),
    )
    .arg("--listen")
    .arg(format!("127.0.0.1:{port}"))
    .arg("--database-url")
    .arg(system.database_url(Service::Coordinator))
    .arg("--id")
    .arg("c9")
    .arg("--participant")
    .arg(format!(
        "stock,{},{}",
        proxy.url,
        system.database_url(Service::Stock)
    ))
    .kill_on_drop(true)
    .spawn()
    .expect("a coordinator of the test's own");
    let base = format!("http://127.0.0.1:{port}");
    wait_until("coordinator c9 serves", Duration::from_secs(30), || async {
        let health = api.http.get(format!("{base}/health")).send().await;
        health.is_ok_and(|response| response.status().is_success())
    })
    .await;

    let txid = uuid::Uuid::new_v4().to_string();
    let request = stock_transaction(&txid, &item, epoch_ms(5_000));
    let outcome = run_transaction(&api, &base, &request).await;
    assert_eq!(outcome["outcome"], "committed", "{outcome}");
    let gids = proxy.gids.lock().unwrap().clone();
    assert_eq!(
        gids.len(),
        2,
        "one prepare cut off, one delivered: {gids:?}"
    );
    assert_eq!(gids[0], gids[1], "the resent prepare has the same gid");
    assert_eq!(api.item(&item).await.stock, 4, "taken exactly once");
}
