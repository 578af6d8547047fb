//! Overload: far more checkouts at once than the system admits. Each order instance is
//! restarted with `CHECKOUTS_IN_FLIGHT=2`, so at most four checkouts run at a time, and the
//! course's consistency scenario is run with all 1000 checkouts in flight at once. They queue
//! (`order/src/admission.rs`) instead of failing: every checkout ends in 200 or a business
//! 400, none is refused for load, the books balance, and the prepared branches never exceed
//! the four checkouts admitted.

use std::time::Duration;

use reqwest::StatusCode;
use system_tests::{prepared_count_now, start, wait_nothing_prepared, wait_until, Api, Service};

const IN_FLIGHT_PER_INSTANCE: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_more_checkouts_than_admitted_queue_and_all_end_in_200_or_a_business_400() {
    let system = start().await;
    let orders = system.processes(Service::Order);
    let supervisor = system.supervisor();
    for name in &orders {
        supervisor
            .set_env(
                name,
                "CHECKOUTS_IN_FLIGHT",
                Some(&IN_FLIGHT_PER_INSTANCE.to_string()),
            )
            .expect("set env");
        supervisor.stop(name).expect("stop order instance");
        supervisor.start(name).expect("start order instance");
    }
    let http = reqwest::Client::new();
    for name in &orders {
        let health = format!("{}/health", system.instance_url(name).expect("its URL"));
        wait_until(
            &format!("{name} serves with its new limit"),
            Duration::from_secs(30),
            || async {
                let answer = http.get(&health).send().await;
                answer.is_ok_and(|response| response.status().is_success())
            },
        )
        .await;
    }
    let api = Api::new(&system);
    let scenario = system_tests::consistency(&api).await;

    // The prepared branches, sampled while the checkouts run: with at most four checkouts
    // admitted, no database can hold more than four.
    let sampling = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn({
        let system_prepared = system.database_url(Service::Order);
        let mut stop = sampling.1.clone();
        async move {
            let mut most = 0i64;
            let mut connection =
                <sqlx::PgConnection as sqlx::Connection>::connect(&system_prepared)
                    .await
                    .expect("order database");
            while !*stop.borrow() {
                let prepared: i64 = sqlx::query_scalar("select count(*) from pg_prepared_xacts")
                    .fetch_one(&mut connection)
                    .await
                    .expect("count prepared");
                most = most.max(prepared);
                let _ = tokio::time::timeout(Duration::from_millis(5), stop.changed()).await;
            }
            most
        }
    });
    let results =
        system_tests::run_checkouts(&api, &scenario.orders, system_tests::CONSISTENCY_ORDERS).await;
    sampling.0.send(true).expect("stop sampling");
    let most_prepared = sampler.await.expect("sampler");

    let count = |wanted: fn(StatusCode) -> bool| results.iter().filter(|(_, s)| wanted(*s)).count();
    let ok = count(|s| s == StatusCode::OK);
    let refused = count(|s| s == StatusCode::BAD_REQUEST);
    assert_eq!(
        (ok, refused),
        (100, 900),
        "every checkout ends in 200 or a business 400; others: {:?}",
        results
            .iter()
            .filter(|(_, s)| *s != StatusCode::OK && *s != StatusCode::BAD_REQUEST)
            .take(10)
            .collect::<Vec<_>>()
    );
    let admitted = (IN_FLIGHT_PER_INSTANCE * orders.len()) as i64;
    assert!(
        most_prepared <= admitted,
        "{most_prepared} order branches prepared at once; at most {admitted} checkouts run"
    );
    system_tests::assert_consistency_exact(&system, api.client(), &results).await;
    wait_nothing_prepared(&system, Duration::from_secs(10)).await;
    assert_eq!(prepared_count_now(&system).await, Some(0));
}
