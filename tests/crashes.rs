//! Crashes for real: the coordinator exits hard at each protocol step (failpoints), and
//! participant services, participant databases and the coordinator are killed with SIGKILL.
//! After restarts, every branch is finished, nothing stays prepared, and the books balance.

use std::time::Duration;

use reqwest::StatusCode;
use system_tests::{
    arm_coordinator_failpoint, crash_after_the_decision_alone, ledger, order_of_two,
    restart_coordinator_clean, start, wait_coordinator_crashed, wait_nothing_prepared, wait_until,
    Api, Service,
};

/// For every crash point: the checkout's reply matches what happened, nothing stays prepared,
/// and stock sold = credit spent = paid totals. A crash before the decision aborts that
/// transaction, but the order service may retry the checkout (a transient abort) on the
/// restarted coordinators, so either reply is right as long as it tells the truth; after the
/// decision the checkout must commit.
#[tokio::test]
async fn a_coordinator_crash_at_every_protocol_step_is_recovered_exactly() {
    let system = start().await;
    let api = Api::new(&system);
    let cases = [
        ("after_first_prepare", None),
        ("before_decision", None),
        ("after_decision", Some(true)),
        ("mid_phase_two", Some(true)),
    ];
    let mut initial_stock = 0;
    let mut initial_credit = 0;
    for (failpoint, must_commit) in cases {
        let bought = order_of_two(&api).await;
        initial_stock += 100;
        initial_credit += 100;
        arm_coordinator_failpoint(&system, failpoint).await;
        let checkout = api.spawn_checkout(&bought.order);
        wait_coordinator_crashed(&system).await;
        restart_coordinator_clean(&system);
        let status = checkout.await.expect("checkout task");
        assert!(
            status == StatusCode::OK || status.is_client_error(),
            "{failpoint}: {status}"
        );
        let commits = status == StatusCode::OK;
        if let Some(must_commit) = must_commit {
            assert_eq!(commits, must_commit, "{failpoint}: {status}");
        }
        wait_nothing_prepared(&system, Duration::from_secs(30)).await;
        bought.assert_settled(&api, commits, failpoint).await;
        let books = ledger(&system, initial_stock, initial_credit).await;
        assert_eq!(
            books.stock_sold * 3,
            books.paid_total,
            "{failpoint}: stock vs totals"
        );
        assert_eq!(
            books.credit_spent, books.paid_total,
            "{failpoint}: credit vs totals"
        );
    }
}

/// Branches prepared everywhere and the commit logged, then the stock service instances and
/// the stock database are killed before phase two: the decision still lands everywhere. The
/// peer coordinator is kept down meanwhile, as it would otherwise finish the branches first.
#[tokio::test]
async fn participants_killed_between_prepare_and_commit_lose_nothing() {
    let system = start().await;
    let api = Api::new(&system);
    let bought = order_of_two(&api).await;
    let checkout = crash_after_the_decision_alone(&system, &api, &bought.order).await;
    let supervisor = system.supervisor();
    let prepared = system_tests::scalar_i64(
        &system,
        Service::Stock,
        "select count(*) from pg_prepared_xacts",
    )
    .await;
    assert_eq!(prepared, 1, "the stock branch is prepared");

    for victim in ["stock-1", "stock-2", "pg-stock", "payment-1", "pg-payment"] {
        system.kill(victim).expect("kill");
    }
    for victim in ["pg-stock", "pg-payment", "stock-1", "stock-2", "payment-1"] {
        supervisor
            .wait_running(victim, Duration::from_secs(30))
            .expect("restarted");
    }
    restart_coordinator_clean(&system);

    assert_eq!(checkout.await.expect("checkout task"), StatusCode::OK);
    wait_nothing_prepared(&system, Duration::from_secs(30)).await;
    // The restarted instances serve once the gateway's checks have seen them up.
    wait_until(
        "stock and payment served again",
        Duration::from_secs(30),
        || async {
            let stock = api.get(&format!("/stock/find/{}", bought.item)).await.0;
            let payment = api
                .get(&format!("/payment/find_user/{}", bought.user))
                .await
                .0;
            stock.is_success() && payment.is_success()
        },
    )
    .await;
    bought.assert_paid_once(&api).await;
}

/// The consistency scenario while the coordinator, a stock instance and an order instance are
/// killed mid-run. The order instance's requests to the coordinator vanish with it: the
/// coordinator must still finish their transactions (nothing left prepared).
#[tokio::test]
async fn consistency_holds_while_the_coordinator_and_service_instances_are_killed() {
    let system = start().await;
    let api = Api::new(&system);
    let scenario = system_tests::consistency(&api).await;
    let run = tokio::spawn({
        let api = api.clone();
        let orders = scenario.orders.clone();
        async move { system_tests::run_checkouts(&api, &orders, 100).await }
    });
    wait_until("the run is under way", Duration::from_secs(60), || async {
        system_tests::scalar_i64(
            &system,
            Service::Order,
            "select count(*) from orders where paid",
        )
        .await
            >= 20
    })
    .await;
    let coordinator = Service::Coordinator.instance_process(1);
    system.kill(&coordinator).expect("kill coordinator");
    system.kill("stock-1").expect("kill stock-1");
    // Once the restarted coordinator serves again, lose an order instance mid-checkout.
    wait_until("coordinator back", Duration::from_secs(30), || {
        system_tests::coordinator_healthy(&system, &coordinator)
    })
    .await;
    system.kill("order-1").expect("kill order-1");
    let results = run.await.expect("run");

    assert_eq!(results.len(), scenario.orders.len());
    system_tests::assert_consistency_exact(&system, api.client(), &results).await;
    wait_nothing_prepared(&system, Duration::from_secs(30)).await;
    assert!(
        system
            .supervisor()
            .restarts(&coordinator)
            .expect("restarts")
            >= 1
    );
}
