//! Sender tests against a scripted in-test MLLP server, and against the crate's own listener.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use plexus_mllp::{
    AckCode, AttemptError, ErrorAckPolicy, Listener, ListenerConfig, SendError, Sender,
    SenderConfig, handler_fn,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{Act, ScriptServer, ack, control_id, message};

/// Short timeouts and pauses so failure paths run fast; the margins are still wide for loopback.
fn fast() -> SenderConfig {
    SenderConfig {
        connect_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        ack_timeout: Duration::from_secs(1),
        attempts: 3,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        ..SenderConfig::default()
    }
}

fn answer_with(code: &'static str) -> impl Fn(usize, usize, &[u8]) -> Act + Send + Sync + 'static {
    move |_, _, payload| Act::Reply(ack(code, &control_id(payload)))
}

/// No error text or Debug output may contain message content.
fn assert_no_phi(err: &SendError) {
    let mut texts = vec![format!("{err:?}")];
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        texts.push(e.to_string());
        source = e.source();
    }
    for text in texts {
        assert!(!text.contains("SECRET"), "PHI in error: {text}");
    }
}

#[tokio::test]
async fn accepted_and_connection_reused() {
    let server = ScriptServer::start(answer_with("AA")).await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    assert!(!sender.is_connected(), "connects lazily");

    for id in ["MSG1", "MSG2", "MSG3"] {
        let delivery = sender.send(&message(id)).await.expect("accepted");
        assert_eq!(delivery.ack.as_ref().expect("an ACK").code(), AckCode::AA);
        assert_eq!(delivery.attempts, 1);
        assert_eq!(
            control_id(delivery.ack.as_ref().expect("an ACK").bytes()),
            format!("ACK{id}")
        );
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    assert_eq!(server.messages.load(Ordering::SeqCst), 3);
    server.stop().await;
}

#[tokio::test]
async fn a_long_control_id_is_matched_whole() {
    // Longer than error text shows (200 characters): the ACK echoes all of it, and that
    // must count as this message's ACK, not a stale one.
    let server = ScriptServer::start(answer_with("AA")).await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    let id = "L".repeat(300);
    let delivery = sender.send(&message(&id)).await.expect("accepted");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(server.messages.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn commit_accept_is_accepted() {
    let server = ScriptServer::start(answer_with("CA")).await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    let delivery = sender.send(&message("C1")).await.expect("accepted");
    assert_eq!(delivery.ack.as_ref().expect("an ACK").code(), AckCode::CA);
    server.stop().await;
}

#[tokio::test]
async fn reject_is_permanent_and_not_retried() {
    let server = ScriptServer::start(answer_with("AR")).await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    let err = sender.send(&message("R1")).await.expect_err("rejected");
    match &err {
        SendError::Rejected {
            control_id, ack, ..
        } => {
            assert_eq!(control_id, "R1");
            assert_eq!(ack.code(), AckCode::AR);
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("R1") && text.contains(&server.addr.to_string()),
        "{text}"
    );
    assert_no_phi(&err);
    assert_eq!(server.messages.load(Ordering::SeqCst), 1);
    // The connection is fine after a reject and is reused.
    assert!(sender.is_connected());
    server.stop().await;
}

#[tokio::test]
async fn error_ack_is_permanent_by_default() {
    let server = ScriptServer::start(answer_with("AE")).await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    let err = sender.send(&message("E1")).await.expect_err("error ack");
    assert!(
        matches!(err, SendError::ApplicationError { ref ack, .. } if ack.code() == AckCode::AE)
    );
    assert_eq!(server.messages.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn error_ack_is_retried_when_configured() {
    // AE on the first try, AA on the second.
    let server = ScriptServer::start(|_, n, payload: &[u8]| {
        Act::Reply(ack(if n == 0 { "CE" } else { "AA" }, &control_id(payload)))
    })
    .await;
    let config = SenderConfig {
        on_error_ack: ErrorAckPolicy::Retry,
        ..fast()
    };
    let mut sender = Sender::new(server.addr.to_string(), config);
    let delivery = sender
        .send(&message("E2"))
        .await
        .expect("accepted on retry");
    assert_eq!(delivery.attempts, 2);
    assert_eq!(server.messages.load(Ordering::SeqCst), 2);
    server.stop().await;
}

#[tokio::test]
async fn missing_ack_reconnects_and_retries() {
    // The first connection swallows the message; the second answers.
    let server = ScriptServer::start(|conn, _, payload: &[u8]| {
        if conn == 0 {
            Act::Ignore
        } else {
            Act::Reply(ack("AA", &control_id(payload)))
        }
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    let delivery = sender
        .send(&message("T1"))
        .await
        .expect("accepted on retry");
    assert_eq!(delivery.attempts, 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    // At least once: the receiver saw the message twice.
    assert_eq!(server.messages.load(Ordering::SeqCst), 2);
    server.stop().await;
}

#[tokio::test]
async fn connection_closed_before_ack_is_retried() {
    let server = ScriptServer::start(|conn, _, payload: &[u8]| {
        if conn == 0 {
            Act::Close
        } else {
            Act::Reply(ack("AA", &control_id(payload)))
        }
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    let delivery = sender
        .send(&message("K1"))
        .await
        .expect("accepted on retry");
    assert_eq!(delivery.attempts, 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    server.stop().await;
}

#[tokio::test]
async fn stale_ack_drops_connection_and_retries() {
    let server = ScriptServer::start(|conn, _, payload: &[u8]| {
        let id = if conn == 0 {
            "OLD-ID".to_owned()
        } else {
            control_id(payload)
        };
        Act::Reply(ack("AA", &id))
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    let delivery = sender
        .send(&message("S1"))
        .await
        .expect("accepted on retry");
    assert_eq!(delivery.attempts, 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    server.stop().await;
}

/// A message in enhanced mode asking for its accept ACK per `accept` (MSH-15).
fn enhanced(id: &str, accept: &str) -> Vec<u8> {
    format!("MSH|^~\\&|SND|FAC|RCV|FAC|20250101120000||ADT^A01|{id}|P|2.5|||{accept}|AL\rPID|1||X")
        .into_bytes()
}

fn unasked_fast() -> SenderConfig {
    SenderConfig {
        unasked_wait: Duration::from_millis(200),
        ne_wait: Duration::from_millis(50),
        ..fast()
    }
}

/// MSH-15 `NE` and `ER`: a receiver that honours them stays silent on success. The
/// message counts as sent (no retry, no resend): `NE` at once, `ER` after the short wait;
/// the connection goes on serving the next message.
#[tokio::test]
async fn messages_asking_for_no_answer_on_success_are_sent_once_and_not_waited_for() {
    let server = ScriptServer::start(|_, _, payload: &[u8]| {
        let text = String::from_utf8_lossy(payload);
        if text.contains("|NE|") || text.contains("|ER|") {
            Act::Ignore
        } else {
            Act::Reply(ack("AA", &control_id(payload)))
        }
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), unasked_fast());
    let started = std::time::Instant::now();
    let delivery = sender.send(&enhanced("NE1", "NE")).await.expect("sent");
    assert!(delivery.ack.is_none());
    assert_eq!(delivery.attempts, 1);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_millis(180),
        "NE waits its short wait: {waited:?}"
    );
    let started = std::time::Instant::now();
    let delivery = sender.send(&enhanced("ER1", "ER")).await.expect("sent");
    assert!(delivery.ack.is_none());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_millis(900),
        "ER waits the short wait, not the ACK timeout: {waited:?}"
    );
    let delivery = sender.send(&message("AL1")).await.expect("accepted");
    assert_eq!(delivery.ack.as_ref().expect("an ACK").code(), AckCode::AA);
    assert_eq!(server.messages.load(Ordering::SeqCst), 3, "each sent once");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    server.stop().await;
}

/// A message sent again under an id that went unanswered before gets its own answer: it
/// is not passed over as the late answer to the first.
#[tokio::test]
async fn an_id_sent_again_is_answered_not_passed_over() {
    let server = ScriptServer::start(|_, _, payload: &[u8]| {
        if String::from_utf8_lossy(payload).contains("|NE|") {
            Act::Ignore
        } else {
            Act::Reply(ack("AA", &control_id(payload)))
        }
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), unasked_fast());
    sender.send(&enhanced("D1", "NE")).await.expect("sent");
    let delivery = sender.send(&message("D1")).await.expect("accepted");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.ack.as_ref().expect("an ACK").code(), AckCode::AA);
    server.stop().await;
}

/// A receiver that ignores MSH-15 and answers an `NE` message at once: the answer waits
/// on the idle connection, which is kept (not dropped as out of step), and the next
/// send passes over it.
#[tokio::test]
async fn an_answer_to_an_ne_message_waiting_on_the_idle_connection_is_passed_over() {
    let server = ScriptServer::start(answer_with("AA")).await;
    let mut sender = Sender::new(
        server.addr.to_string(),
        SenderConfig {
            ne_wait: Duration::ZERO,
            ..unasked_fast()
        },
    );
    let delivery = sender.send(&enhanced("NE5", "NE")).await.expect("sent");
    assert!(delivery.ack.is_none(), "not waited for");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let delivery = sender.send(&message("AL5")).await.expect("accepted");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(
        control_id(delivery.ack.as_ref().expect("an ACK").bytes()),
        "ACKAL5"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "kept");
    server.stop().await;
}

/// A receiver that takes each message and hangs up without a word (as NE and ER allow):
/// each message is delivered once, none is retried, and none is written onto the
/// connection it is closing.
#[tokio::test]
async fn a_receiver_that_hangs_up_after_each_silent_message_gets_each_once() {
    let server = ScriptServer::start(|_, _, _: &[u8]| Act::Close).await;
    let mut sender = Sender::new(server.addr.to_string(), unasked_fast());
    for (i, mode) in ["NE", "ER", "NE", "NE", "ER"].iter().enumerate() {
        let delivery = sender
            .send(&enhanced(&format!("H{i}"), mode))
            .await
            .expect("sent");
        assert!(delivery.ack.is_none());
        assert_eq!(delivery.attempts, 1, "{mode} not retried");
    }
    assert_eq!(
        server.messages.load(Ordering::SeqCst),
        5,
        "each received once"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 5);
    server.stop().await;
}

/// Sends `first` (MSH-15 `mode`) to a receiver that stays silent, then a message in
/// original mode, which the receiver answers with a late `late_code` for `first` followed
/// by its own AA: the late answer is passed over, not taken for the second message's
/// (which would have sent that one again), on the same connection.
async fn a_late_answer_is_passed_over(first: &str, mode: &str, late_code: &'static str) {
    let late_id = first.to_owned();
    let server = ScriptServer::start(move |_, index, payload: &[u8]| {
        if index == 0 {
            Act::Ignore
        } else {
            Act::Replies(vec![
                ack(late_code, &late_id),
                ack("AA", &control_id(payload)),
            ])
        }
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), unasked_fast());
    let delivery = sender.send(&enhanced(first, mode)).await.expect("sent");
    assert!(delivery.ack.is_none());
    let delivery = sender.send(&message("AL1")).await.expect("accepted");
    assert_eq!(delivery.attempts, 1, "not sent again");
    assert_eq!(
        control_id(delivery.ack.as_ref().expect("an ACK").bytes()),
        "ACKAL1"
    );
    assert_eq!(server.messages.load(Ordering::SeqCst), 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    server.stop().await;
}

/// A late error answer to an `ER` message (after the wait).
#[tokio::test]
async fn a_late_error_answer_is_passed_over_and_the_next_message_answered() {
    a_late_answer_is_passed_over("ER9", "ER", "AE").await;
}

/// A receiver that answers an `NE` message anyway, after the wait.
#[tokio::test]
async fn a_late_answer_to_an_unasked_message_is_not_taken_for_the_next() {
    a_late_answer_is_passed_over("NE1", "NE", "AA").await;
}

/// `ER` with an error: the receiver's AE is the answer, as in original mode.
#[tokio::test]
async fn an_error_answer_to_an_er_message_is_an_error() {
    let server = ScriptServer::start(answer_with("AE")).await;
    let mut sender = Sender::new(server.addr.to_string(), unasked_fast());
    let err = sender.send(&enhanced("ER2", "ER")).await.expect_err("AE");
    assert!(matches!(err, SendError::ApplicationError { .. }), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn an_error_ack_without_msa2_answers_this_message_and_keeps_the_receivers_words() {
    // A receiver that cannot parse a message often cannot echo its id: its AR is a
    // rejection of the one message outstanding, not a stale ACK to retry.
    let server = ScriptServer::start(|_, _, _: &[u8]| {
        Act::Reply(Bytes::from_static(
            b"MSH|^~\\&|RCV|FAC|SND|FAC|20260101||ACK|A1|P|2.5\rMSA|AR||cannot parse\rERR|||102^Data type error^HL70357|E||||PV1-3 unknown location\r",
        ))
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    let err = sender.send(&message("NOID1")).await.expect_err("rejected");
    assert!(matches!(err, SendError::Rejected { .. }), "{err:?}");
    assert_eq!(server.messages.load(Ordering::SeqCst), 1, "not retried");
    let reason = err
        .ack()
        .and_then(|a| a.reason())
        .expect("the receiver said why");
    assert_eq!(
        reason,
        "102 Data type error; PV1-3 unknown location; cannot parse"
    );
    assert_no_phi(&err);
    server.stop().await;

    // An AA without MSA-2 on a connection opened for the message is its answer; the
    // connection is not reused (a later stray answer there could name no message), so
    // each message gets a connection of its own and one attempt.
    let server = ScriptServer::start(|_, _, _: &[u8]| {
        Act::Reply(Bytes::from_static(
            b"MSH|^~\\&|RCV|FAC|SND|FAC|20260101||ACK|A2|P|2.5\rMSA|AA\r",
        ))
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    for id in ["NOID2", "NOID3"] {
        let delivery = sender.send(&message(id)).await.expect("accepted");
        assert_eq!(
            (
                delivery.ack.as_ref().expect("an ACK").code(),
                delivery.attempts
            ),
            (AckCode::AA, 1)
        );
        assert_eq!(delivery.ack.as_ref().expect("an ACK").reason(), None);
        assert!(
            !sender.is_connected(),
            "not kept after an answer naming no message"
        );
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    server.stop().await;
}

#[tokio::test]
async fn an_unechoed_ack_on_a_reused_connection_is_not_credited_to_the_next_message() {
    // A receiver that answers the first message twice (an accept ACK, then an
    // application ACK without MSA-2): the second frame must not count as the answer to
    // the next message sent on that connection.
    let stray = Bytes::from_static(b"MSH|^~\\&|RCV|FAC|SND|FAC|20260101||ACK|A3|P|2.5\rMSA|AA\r");
    let server = ScriptServer::start(move |conn, n, payload: &[u8]| {
        let id = control_id(payload);
        match (conn, n) {
            // The late second answer to FIRST lands just ahead of SECOND's own, after
            // the pooled connection's check passed.
            (0, 1) => Act::Replies(vec![stray.clone(), ack("AA", &id)]),
            _ => Act::Reply(ack("AA", &id)),
        }
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    sender.send(&message("FIRST")).await.expect("accepted");
    let delivery = sender.send(&message("SECOND")).await.expect("accepted");
    assert_eq!(
        control_id(delivery.ack.as_ref().expect("an ACK").bytes()),
        "ACKSECOND",
        "its own answer"
    );
    assert_eq!(delivery.attempts, 2, "sent again on a fresh connection");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    server.stop().await;
}

#[tokio::test]
async fn no_ack_at_all_exhausts_attempts() {
    let server = ScriptServer::start(|_, _, _: &[u8]| Act::Ignore).await;
    let config = SenderConfig {
        attempts: 2,
        ack_timeout: Duration::from_millis(100),
        ..fast()
    };
    let mut sender = Sender::new(server.addr.to_string(), config);
    let err = sender.send(&message("X1")).await.expect_err("no ack");
    assert!(err.is_retryable());
    assert!(
        matches!(
            err,
            SendError::Exhausted {
                attempts: 2,
                last: AttemptError::AckTimeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("X1"));
    assert_no_phi(&err);
    server.stop().await;
}

#[tokio::test]
async fn closed_pooled_connection_is_replaced_without_a_failed_attempt() {
    let server = ScriptServer::start(|_, _, payload: &[u8]| {
        Act::ReplyAndClose(ack("AA", &control_id(payload)))
    })
    .await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    sender.send(&message("P1")).await.expect("accepted");
    // Give the server's FIN time to arrive (loopback: microseconds).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let delivery = sender.send(&message("P2")).await.expect("accepted");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    assert_eq!(server.messages.load(Ordering::SeqCst), 2);
    server.stop().await;
}

#[tokio::test]
async fn server_restart_reconnects_with_backoff() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = tcp.local_addr().expect("addr");
    let server = ScriptServer::start_on(tcp, answer_with("AA"));
    let config = SenderConfig {
        // 60 tries with at most 50 ms between them: about 3 s of retrying, for a 300 ms outage.
        attempts: 60,
        ..fast()
    };
    let mut sender = Sender::new(addr.to_string(), config);
    sender.send(&message("B1")).await.expect("accepted");

    server.stop().await;
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tcp = TcpListener::bind(addr)
            .await
            .expect("rebinds the same port");
        ScriptServer::start_on(tcp, answer_with("AA"))
    });
    let delivery = sender
        .send(&message("B2"))
        .await
        .expect("accepted after restart");
    assert!(
        delivery.attempts > 1,
        "the server was down for the first attempt"
    );
    let server = restart.await.expect("restarted");
    assert_eq!(server.messages.load(Ordering::SeqCst), 1);
    server.stop().await;
}

#[tokio::test]
async fn connection_refused_exhausts_attempts() {
    // A port bound without listening: connections to it are refused, and while the
    // socket is held no other test's listener can be handed it.
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("binds");
    let addr = reserved.local_addr().expect("addr");
    let config = SenderConfig {
        attempts: 2,
        ..fast()
    };
    let mut sender = Sender::new(addr.to_string(), config);
    let err = sender.send(&message("N1")).await.expect_err("refused");
    assert!(
        matches!(
            err,
            SendError::Exhausted {
                last: AttemptError::Connect(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!sender.may_have_delivered(), "refused: nothing was written");
}

#[tokio::test]
async fn a_send_cut_off_while_waiting_for_its_ack_may_have_delivered() {
    // A receiver that reads and never answers: the message may be there.
    let quiet = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let quiet_addr = quiet.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut conn, _) = quiet.accept().await.expect("accept");
        let mut buf = vec![0_u8; 4096];
        while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let mut sender = Sender::new(
        quiet_addr.to_string(),
        SenderConfig {
            attempts: 1,
            ack_timeout: Duration::from_secs(30),
            ..fast()
        },
    );
    let cut = tokio::time::timeout(Duration::from_millis(500), sender.send(&message("N2"))).await;
    assert!(cut.is_err(), "still waiting for the ACK");
    assert!(sender.may_have_delivered());
}

#[tokio::test]
async fn invalid_messages_are_not_sent() {
    let server = ScriptServer::start(answer_with("AA")).await;
    let mut sender = Sender::new(server.addr.to_string(), fast());

    let err = sender.send(b"PID|1||SECRET").await.expect_err("not HL7");
    assert!(matches!(err, SendError::InvalidMessage { .. }), "{err:?}");
    assert_no_phi(&err);

    let err = sender
        .send(b"MSH|^~\\&|A|B|C|D|2025||ADT^A01||P|2.5\rPID|1||SECRET")
        .await
        .expect_err("no MSH-10");
    assert!(matches!(err, SendError::MissingControlId { .. }), "{err:?}");

    let mut framed = message("F1");
    framed.push(0x1C);
    let err = sender.send(&framed).await.expect_err("block byte");
    // The HL7 parser refuses MLLP's frame markers by offset before framing is reached.
    assert!(
        matches!(
            err,
            SendError::InvalidMessage {
                source: plexus_hl7::ParseError::FramingByte { byte: 0x1C, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_message_parsed_already_is_checked_by_its_header_only() {
    let server = ScriptServer::start(answer_with("AA")).await;
    let mut sender = Sender::new(server.addr.to_string(), fast());
    // A body segment the parser refuses: `send` keeps it, `send_parsed` lets the
    // receiver judge it (the engine parsed what it journals before it sends it).
    let mut odd = message("H1");
    odd.extend_from_slice(b"\rpid|1");
    let err = sender.send(&odd).await.expect_err("whole parse");
    assert!(matches!(err, SendError::InvalidMessage { .. }), "{err:?}");
    let delivery = sender.send_parsed(&odd).await.expect("sent");
    assert_eq!(delivery.ack.as_ref().expect("an ACK").code(), AckCode::AA);
    // The header is still checked, and so is framing.
    let err = sender
        .send_parsed(b"PID|1||SECRET")
        .await
        .expect_err("no MSH");
    assert!(matches!(err, SendError::InvalidMessage { .. }), "{err:?}");
    let err = sender
        .send_parsed(b"MSH|^~\\&|A|B|C|D|2025||ADT^A01||P|2.5\rPID|1||SECRET")
        .await
        .expect_err("no MSH-10");
    assert!(matches!(err, SendError::MissingControlId { .. }), "{err:?}");
    let mut framed = message("F2");
    framed.push(0x1C);
    let err = sender.send_parsed(&framed).await.expect_err("block byte");
    assert!(matches!(err, SendError::Unframeable { .. }), "{err:?}");
    assert_no_phi(&err);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    server.stop().await;
}

/// Builds an AA for the received message, as the engine's handler will.
fn acking_handler() -> impl plexus_mllp::Handler {
    handler_fn(|payload: Bytes, _| async move { Some(ack("AA", &control_id(&payload))) })
}

#[tokio::test]
async fn sender_to_listener() {
    let listener = Listener::bind(
        "127.0.0.1:0".parse().expect("addr"),
        ListenerConfig::default(),
    )
    .await
    .expect("binds");
    let addr = listener.local_addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(listener.serve(Arc::new(acking_handler()), shutdown.clone()));

    let mut sender = Sender::new(addr.to_string(), fast());
    for i in 0..10 {
        let delivery = sender
            .send(&message(&format!("L{i}")))
            .await
            .expect("accepted");
        assert_eq!(delivery.attempts, 1);
    }
    sender.close().await;
    shutdown.cancel();
    let summary = server.await.expect("serve returns");
    assert_eq!(summary.served, 1);
}

#[tokio::test]
async fn sender_to_listener_over_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert_pem = cert.cert.pem();
    let server_tls = plexus_mllp::tls::server_config_from_pem_bytes(
        cert_pem.as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .expect("server config");
    let listener = Listener::bind(
        "127.0.0.1:0".parse().expect("addr"),
        ListenerConfig::default(),
    )
    .await
    .expect("binds")
    .with_tls(server_tls);
    let addr = listener.local_addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(listener.serve(Arc::new(acking_handler()), shutdown.clone()));

    let client_tls =
        plexus_mllp::tls::client_config_from_pem_bytes(cert_pem.as_bytes()).expect("client config");
    let name = plexus_mllp::tls::server_name("localhost").expect("name");
    let mut sender = Sender::new(addr.to_string(), fast()).with_tls(client_tls, name);
    let delivery = sender.send(&message("TLS1")).await.expect("accepted");
    assert_eq!(delivery.ack.as_ref().expect("an ACK").code(), AckCode::AA);

    // A certificate for another name fails the handshake, as a retryable error.
    let other = plexus_mllp::tls::server_name("example.org").expect("name");
    let client_tls =
        plexus_mllp::tls::client_config_from_pem_bytes(cert_pem.as_bytes()).expect("client config");
    let config = SenderConfig {
        attempts: 1,
        ..fast()
    };
    let mut wrong = Sender::new(addr.to_string(), config).with_tls(client_tls, other);
    let err = wrong.send(&message("TLS2")).await.expect_err("bad name");
    assert!(
        matches!(
            err,
            SendError::Exhausted {
                last: AttemptError::Tls(_),
                ..
            }
        ),
        "{err:?}"
    );

    // A receiver that does not speak TLS on that port (it waits for a frame, so the
    // handshake never ends): said as such, not as a connect timeout, and nothing was sent.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let plain_addr = plain.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let (conn, _) = plain.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(conn);
    });
    let client_tls =
        plexus_mllp::tls::client_config_from_pem_bytes(cert_pem.as_bytes()).expect("client config");
    let config = SenderConfig {
        attempts: 1,
        connect_timeout: Duration::from_millis(300),
        ..fast()
    };
    let name = plexus_mllp::tls::server_name("localhost").expect("name");
    let mut no_tls = Sender::new(plain_addr.to_string(), config).with_tls(client_tls, name);
    let err = no_tls
        .send(&message("TLS3"))
        .await
        .expect_err("no TLS there");
    assert!(
        matches!(
            err,
            SendError::Exhausted {
                last: AttemptError::TlsHandshakeTimeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.may_have_arrived());
    held.abort();

    sender.close().await;
    shutdown.cancel();
    server.await.expect("serve returns");
}
