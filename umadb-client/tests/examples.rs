//! Runs the flows of `examples/` against a real server, so the examples stay correct.

mod common;

#[path = "../examples/async_plain.rs"]
#[allow(dead_code)]
mod async_plain;
#[path = "../examples/async_tls.rs"]
#[allow(dead_code)]
mod async_tls;
#[path = "../examples/blocking_plain.rs"]
#[allow(dead_code)]
mod blocking_plain;
#[path = "../examples/blocking_tls.rs"]
#[allow(dead_code)]
mod blocking_tls;

use common::{Options, TestServer, API_KEY};
use umadb_client::Client;

/// The username's claims as recorded: the example must have written exactly one.
async fn claims(url: &str, ca_path: Option<&std::path::Path>, username: &str) -> Vec<u64> {
    let mut builder = Client::builder(url).api_key(API_KEY);
    if let Some(ca_path) = ca_path {
        builder = builder.ca_path(ca_path);
    }
    let client = builder.connect().await.expect("connect");
    let query = umadb_client::Query::from_items([umadb_client::QueryItem::new(
        ["UsernameClaimed"],
        [format!("username:{username}")],
    )]);
    let (events, _) = client
        .read(Some(query), None, false, None)
        .await
        .expect("read")
        .collect_with_head()
        .await
        .expect("collect");
    events.into_iter().map(|e| e.position).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn async_plain_example_claims_once_then_finds_the_claim() {
    let server = TestServer::start().await;
    let url = server.url();
    assert_eq!(
        async_plain::run(&url, "alice").await,
        Ok(async_plain::Claim::Claimed(1))
    );
    assert_eq!(
        async_plain::run(&url, "alice").await,
        Ok(async_plain::Claim::Taken(1))
    );
    assert_eq!(
        async_plain::run(&url, "bob").await,
        Ok(async_plain::Claim::Claimed(2))
    );
    assert_eq!(claims(&url, None, "alice").await, vec![1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn async_tls_example_claims_once_with_a_ca_file_and_an_api_key() {
    let server = TestServer::start_with(Options {
        tls: true,
        api_key: true,
    })
    .await;
    let url = server.url();
    let ca = server.ca_path.clone().expect("CA");
    let ca_text = ca.to_str().expect("utf-8 path");
    for expected in [async_tls::Claim::Claimed(1), async_tls::Claim::Taken(1)] {
        assert_eq!(
            async_tls::run(&url, Some(ca_text), Some(API_KEY), "alice").await,
            Ok(expected)
        );
    }
    assert_eq!(claims(&url, Some(&ca), "alice").await, vec![1]);
    assert!(matches!(
        async_tls::run(&url, Some(ca_text), None, "carol").await,
        Err(umadb_client::Error::Authentication(_))
    ));
}

#[test]
fn blocking_examples_claim_once_then_find_the_claim() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let plain = runtime.block_on(TestServer::start());
    let url = plain.url();
    assert_eq!(
        blocking_plain::run(&url, "alice"),
        Ok(blocking_plain::Claim::Claimed(1))
    );
    assert_eq!(
        blocking_plain::run(&url, "alice"),
        Ok(blocking_plain::Claim::Taken(1))
    );
    assert_eq!(runtime.block_on(claims(&url, None, "alice")), vec![1]);

    let tls = runtime.block_on(TestServer::start_with(Options {
        tls: true,
        api_key: true,
    }));
    let url = tls.url();
    let ca = tls.ca_path.clone().expect("CA");
    let ca_text = ca.to_str().expect("utf-8 path");
    for expected in [
        blocking_tls::Claim::Claimed(1),
        blocking_tls::Claim::Taken(1),
    ] {
        assert_eq!(
            blocking_tls::run(&url, Some(ca_text), Some(API_KEY), "alice"),
            Ok(expected)
        );
    }
    assert_eq!(runtime.block_on(claims(&url, Some(&ca), "alice")), vec![1]);
}
