//! Placing a request at most once, whatever delivers it how often: the ledger's claim comes
//! before anything is sent to Twilio, the outcome is recorded after, and every other delivery
//! is answered from that record.
//!
//! | the first delivery ... | what it records | a later delivery gets |
//! |---|---|---|
//! | placed the call | `placed` + the SID | the same SID, no request to Twilio |
//! | was refused by Twilio (4xx) | `failed` + error type | the same refusal |
//! | sent nothing (429 on every try, no connection, no credentials) | `released` | a fresh attempt |
//! | sent, then no answer (5xx, timeout) | `unknown` | `OutcomeUnknown`, until the claim is stale: then Twilio's Calls list decides (found: its SID; not found: a fresh attempt) |
//! | is still in flight | (the claim) | `OutcomeUnknown` |

use std::future::Future;

use tracing::{error, info, warn};
use twilio_voice::calls::CallCreated;
use twilio_voice::ledger::{
    ClaimOutcome, Duplicate, IdempotencyKey, Ledger, LedgerError, RequestRecord, Resolution,
    STALE_AFTER,
};
use twilio_voice::phone::PhoneNumber;

/// What an attempt's failure means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Nothing reached Twilio, or Twilio did not process it: another attempt is safe.
    NothingPlaced,
    /// Twilio refused it for good.
    Refused {
        error_type: &'static str,
        twilio_code: Option<u32>,
    },
    /// Sent, then no answer: the call may exist.
    MayExist,
}

/// A call placed by this delivery or an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub created: CallCreated,
    /// `false` when an earlier delivery placed it (nothing was sent now).
    pub new: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OnceError<E> {
    /// The ledger could not be asked or written before sending: nothing was sent.
    #[error(transparent)]
    Ledger(LedgerError),
    /// This delivery's attempt failed.
    #[error(transparent)]
    Attempt(E),
    /// An earlier delivery was refused (the same answer again), or its outcome is unknown.
    #[error("an earlier delivery of this request {}", describe(.0))]
    Earlier(Duplicate),
}

fn describe(d: &Duplicate) -> String {
    match d {
        Duplicate::Placed { .. } => "placed the call".to_owned(),
        Duplicate::Failed { error_type, .. } => format!("failed ({error_type})"),
        Duplicate::OutcomeUnknown => "is in flight or its outcome is unknown".to_owned(),
    }
}

/// Places the request keyed `key` unless a delivery of it already did or may have.
///
/// `place` sends it to Twilio; `fate` says what a failure of `place` means; `look_up` asks
/// Twilio's Calls list about a stale claim (no SID, older than [`STALE_AFTER`]).
pub async fn place_once<E, P, PF, L, LF>(
    ledger: &Ledger,
    key: &IdempotencyKey,
    to: &PhoneNumber,
    place: P,
    fate: impl Fn(&E) -> Fate,
    look_up: L,
) -> Result<Placement, OnceError<E>>
where
    P: FnOnce() -> PF,
    PF: Future<Output = Result<CallCreated, E>>,
    L: FnOnce(RequestRecord) -> LF,
    LF: Future<Output = Option<Resolution>>,
{
    place_once_claiming(ledger, || ledger.claim(key, to), place, fate, look_up).await
}

/// [`place_once`] with the claim's own conditional write (an alert step's carries the step).
pub async fn place_once_claiming<E, C, CF, P, PF, L, LF>(
    ledger: &Ledger,
    take_claim: C,
    place: P,
    fate: impl Fn(&E) -> Fate,
    look_up: L,
) -> Result<Placement, OnceError<E>>
where
    C: Fn() -> CF,
    CF: Future<Output = Result<ClaimOutcome, LedgerError>>,
    P: FnOnce() -> PF,
    PF: Future<Output = Result<CallCreated, E>>,
    L: FnOnce(RequestRecord) -> LF,
    LF: Future<Output = Option<Resolution>>,
{
    let claim = match take_claim().await.map_err(OnceError::Ledger)? {
        ClaimOutcome::Won(claim) => claim,
        ClaimOutcome::Duplicate(record) => {
            if !record.is_stale(ledger.time(), STALE_AFTER) {
                return answer_from(record.duplicate());
            }
            match resolve(ledger, record, look_up).await? {
                Some(placement) => return Ok(placement),
                None => match take_claim().await.map_err(OnceError::Ledger)? {
                    ClaimOutcome::Won(claim) => claim,
                    ClaimOutcome::Duplicate(record) => return answer_from(record.duplicate()),
                },
            }
        }
    };
    match place().await {
        Ok(created) => {
            if let Err(e) = ledger
                .record_placed(&claim, &created.sid, &created.status)
                .await
            {
                // The call exists; a later delivery will find the claim stale and the call in
                // Twilio's Calls list.
                error!(call_sid = %created.sid, error = %e, "call placed but not recorded in the ledger");
            }
            Ok(Placement { created, new: true })
        }
        Err(e) => {
            let recorded = match fate(&e) {
                Fate::NothingPlaced => ledger.release(&claim).await,
                Fate::Refused {
                    error_type,
                    twilio_code,
                } => ledger.record_failed(&claim, error_type, twilio_code).await,
                Fate::MayExist => ledger.record_unknown(&claim).await,
            };
            if let Err(le) = recorded {
                warn!(error = %le, "the attempt's outcome was not recorded in the ledger");
            }
            Err(OnceError::Attempt(e))
        }
    }
}

fn answer_from<E>(duplicate: Duplicate) -> Result<Placement, OnceError<E>> {
    match duplicate {
        Duplicate::Placed {
            call_sid,
            call_status,
        } => Ok(Placement {
            created: CallCreated {
                sid: call_sid,
                status: call_status,
            },
            new: false,
        }),
        other => Err(OnceError::Earlier(other)),
    }
}

/// A stale claim: what Twilio's Calls list says decides. `Some` when the call was found, `None`
/// when it was not (the claim is released and may be taken again).
async fn resolve<E, L, LF>(
    ledger: &Ledger,
    record: RequestRecord,
    look_up: L,
) -> Result<Option<Placement>, OnceError<E>>
where
    L: FnOnce(RequestRecord) -> LF,
    LF: Future<Output = Option<Resolution>>,
{
    let Some(resolution) = look_up(record.clone()).await else {
        return Err(OnceError::Earlier(Duplicate::OutcomeUnknown));
    };
    match ledger.resolve(&record, &resolution).await {
        Ok(()) => {}
        // Someone else resolved or recorded it meanwhile: their record answers.
        Err(LedgerError::ClaimLost) => {
            return match ledger
                .request(&record.key)
                .await
                .map_err(OnceError::Ledger)?
            {
                Some(now) => answer_from(now.duplicate()).map(Some),
                None => Ok(None),
            };
        }
        Err(e) => return Err(OnceError::Ledger(e)),
    }
    match resolution {
        Resolution::Found {
            call_sid,
            call_status,
        } => {
            info!(call_sid = %call_sid, "stale claim resolved: the call exists");
            Ok(Some(Placement {
                created: CallCreated {
                    sid: call_sid,
                    status: call_status,
                },
                new: false,
            }))
        }
        Resolution::NotFound => {
            info!("stale claim resolved: no call was placed; trying again");
            Ok(None)
        }
    }
}

/// Which of the calls a Calls-list lookup found for a stale claim (to its number, since the
/// claim, newest first) is this request's: the one whose `call#<SID>` item names this request,
/// else the newest that no item ties to another request (its SID was never recorded). A call
/// that another request placed to the same number minutes apart is never taken for ours.
pub async fn ours_among(
    ledger: &Ledger,
    key: &IdempotencyKey,
    calls: Vec<CallCreated>,
) -> Result<Option<CallCreated>, LedgerError> {
    let mut untied = None;
    for call in calls {
        let owner = ledger
            .call(&call.sid)
            .await?
            .and_then(|record| record.request_key);
        match owner {
            Some(owner) if owner == key.as_str() => return Ok(Some(call)),
            Some(_) => {}
            None => {
                untied.get_or_insert(call);
            }
        }
    }
    Ok(untied)
}
