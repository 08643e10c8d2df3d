//! A payment, tracked as events: the example of the library eventlogs
//! started from. Amounts are minor units of a single currency.

use eventlogs_guest::{Aggregate, CachingPolicy, EventRecord, Rejection};
use serde::{Deserialize, Serialize};

/// What the payer asked for when the payment was created.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// The amount requested.
    pub amount_requested: i64,
}

/// Everything that can happen to a payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentEvent {
    /// The payment was requested.
    Requested {
        /// The request's details.
        request: PaymentRequest,
    },
    /// The gateway approved an amount.
    Authorized {
        /// The amount approved.
        amount: i64,
        /// The gateway's approval code, if any.
        #[serde(default)]
        approval_code: Option<String>,
    },
    /// Part of the approved amount was captured.
    Captured {
        /// The amount captured.
        amount: i64,
        /// What the payer's statement shows.
        #[serde(default)]
        statement_descriptor: String,
    },
    /// Part of the approved amount was refunded.
    Refunded {
        /// The amount refunded.
        amount: i64,
        /// The refund's reference.
        #[serde(default)]
        reference_number: String,
    },
}

/// The state of a payment.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// The original request.
    pub request: PaymentRequest,
    /// Total approved.
    pub amount_approved: i64,
    /// Total captured.
    pub amount_captured: i64,
    /// Total refunded.
    pub amount_refunded: i64,
    /// Approved but neither captured nor refunded.
    pub amount_outstanding: i64,
    /// When the last event was recorded (microseconds since the Unix epoch).
    pub updated_at: i64,
}

impl Aggregate for Payment {
    type Event = PaymentEvent;

    fn apply(&mut self, record: &EventRecord<PaymentEvent>) {
        match record.event() {
            PaymentEvent::Requested { request } => self.request = request.clone(),
            PaymentEvent::Authorized { amount, .. } => self.amount_approved += amount,
            PaymentEvent::Captured { amount, .. } => self.amount_captured += amount,
            PaymentEvent::Refunded { amount, .. } => self.amount_refunded += amount,
        }
        self.amount_outstanding =
            self.amount_approved - self.amount_captured - self.amount_refunded;
        self.updated_at = record.recorded_at();
    }

    /// Money never goes negative: amounts are positive, and captures and
    /// refunds cannot exceed what is outstanding.
    fn validate(&self, record: &EventRecord<PaymentEvent>) -> Result<(), Rejection> {
        let (kind, amount) = match record.event() {
            PaymentEvent::Requested { request } => ("requested", request.amount_requested),
            PaymentEvent::Authorized { amount, .. } => ("authorized", *amount),
            PaymentEvent::Captured { amount, .. } => ("captured", *amount),
            PaymentEvent::Refunded { amount, .. } => ("refunded", *amount),
        };
        if amount < 0 || (amount == 0 && kind != "requested") {
            return Err(Rejection::new(format!(
                "{kind} amount {amount} is not positive"
            )));
        }
        let settles = matches!(
            record.event(),
            PaymentEvent::Captured { .. } | PaymentEvent::Refunded { .. }
        );
        if settles && amount > self.amount_outstanding {
            return Err(Rejection::new(format!(
                "{kind} amount {amount} exceeds the {} outstanding",
                self.amount_outstanding
            )));
        }
        if self.amount_approved.checked_add(amount).is_none() {
            return Err(Rejection::new(format!("{kind} amount {amount} overflows")));
        }
        Ok(())
    }

    /// A settled payment (approved, nothing left outstanding) is rarely
    /// loaded again, so it is not worth a cache entry.
    fn caching_policy(&self) -> CachingPolicy {
        if self.amount_approved > 0 && self.amount_outstanding == 0 {
            CachingPolicy::Skip
        } else {
            CachingPolicy::Cache
        }
    }
}

eventlogs_guest::export_reducer!(Payment);

#[cfg(test)]
mod tests {
    use super::*;
    use eventlogs_guest::{FoldError, RawEvent, fold, fold_raw};

    fn record(index: u64, event: PaymentEvent) -> EventRecord<PaymentEvent> {
        EventRecord::new(index, 1_700_000_000_000_000 + index as i64, event)
    }

    #[test]
    fn seed_scenario_settles_the_payment() {
        let events = [
            PaymentEvent::Requested {
                request: PaymentRequest {
                    amount_requested: 10000,
                },
            },
            PaymentEvent::Authorized {
                amount: 10000,
                approval_code: Some("xyz123".into()),
            },
            PaymentEvent::Captured {
                amount: 4000,
                statement_descriptor: "Widgets, Inc".into(),
            },
            PaymentEvent::Refunded {
                amount: 6000,
                reference_number: "abc789".into(),
            },
        ];
        let records: Vec<_> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| record(i as u64, e))
            .collect();
        let mut payment = Payment::default();
        fold(&mut payment, &records).unwrap();
        assert_eq!(payment.amount_approved, 10000);
        assert_eq!(payment.amount_captured, 4000);
        assert_eq!(payment.amount_refunded, 6000);
        assert_eq!(payment.amount_outstanding, 0);
        assert_eq!(payment.updated_at, 1_700_000_000_000_003);
        assert_eq!(payment.caching_policy(), CachingPolicy::Skip);
    }

    #[test]
    fn over_capture_is_rejected_naming_the_event() {
        let records = [
            record(
                0,
                PaymentEvent::Authorized {
                    amount: 100,
                    approval_code: None,
                },
            ),
            record(
                1,
                PaymentEvent::Captured {
                    amount: 101,
                    statement_descriptor: String::new(),
                },
            ),
        ];
        let mut payment = Payment::default();
        let err = fold(&mut payment, &records).unwrap_err();
        assert!(
            matches!(err, FoldError::RejectedEvent { index: 1, .. }),
            "{err:?}"
        );
        assert_eq!(
            payment.amount_captured, 0,
            "the rejected event is not applied"
        );
    }

    #[test]
    fn undecodable_payload_names_the_event() {
        let ok = serde_json::to_vec(&PaymentEvent::Authorized {
            amount: 5,
            approval_code: None,
        })
        .unwrap();
        let raw = [
            RawEvent {
                index: 7,
                recorded_at: 0,
                payload: &ok,
            },
            RawEvent {
                index: 8,
                recorded_at: 0,
                payload: br#"{"Teleported":{}}"#,
            },
        ];
        let mut payment = Payment::default();
        let err = fold_raw(&mut payment, raw).unwrap_err();
        assert!(
            matches!(err, FoldError::UndecodableEvent { index: 8, .. }),
            "{err:?}"
        );
        assert_eq!(payment.amount_approved, 5);
    }

    #[test]
    fn a_payload_that_is_not_utf8_is_undecodable() {
        let raw = [RawEvent {
            index: 3,
            recorded_at: 0,
            payload: b"{\"Authorized\":{\"amount\":5,\"approval_code\":\"\xff\"}}",
        }];
        let mut payment = Payment::default();
        let err = fold_raw(&mut payment, raw).unwrap_err();
        assert!(
            matches!(&err, FoldError::UndecodableEvent { index: 3, message } if message.contains("utf-8")),
            "{err:?}"
        );
        assert_eq!(payment, Payment::default());
    }
}
