//! What incoming-call learns about calls and passes on, from webhooks already verified:
//! a status callback goes into the call ledger (in `SequenceNumber` order), and the callback
//! that brings the final status publishes `Call Completed`, once; a voicemail's end publishes
//! `Voicemail Recorded`, once per recording.
//!
//! A status callback without `SequenceNumber` (a phone number's own status callback sends only
//! the end of the call) counts as the newest when its status is final and as the oldest
//! otherwise, so it neither hides nor repeats a final status.

use twilio_voice::events::{
    CallCompleted, DomainEvent, EventBus, EventsError, VoicemailRecorded, VoicemailTranscribed,
};
use twilio_voice::ledger::{CallStatus, Ledger, LedgerError, StatusRecorded, StatusUpdate};
use twilio_voice::phone::PhoneNumber;

/// The ledger and the bus, when configured.
#[derive(Debug, Clone)]
pub struct Outcomes {
    pub ledger: Ledger,
    pub bus: EventBus,
}

#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error("webhook parameter {0} is missing or malformed")]
    Parameter(&'static str),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Events(#[from] EventsError),
}

impl OutcomeError {
    /// Twilio's request was fine; our side could not take it now.
    pub fn is_ours(&self) -> bool {
        !matches!(self, Self::Parameter(_))
    }
}

/// A status callback's parameters as the ledger takes them.
pub fn status_update<'a>(
    param: impl Fn(&str) -> Option<&'a str>,
) -> Result<StatusUpdate, OutcomeError> {
    let call_sid = param("CallSid")
        .filter(|s| !s.is_empty())
        .ok_or(OutcomeError::Parameter("CallSid"))?;
    let call_status: CallStatus = param("CallStatus")
        .and_then(|s| s.parse().ok())
        .ok_or(OutcomeError::Parameter("CallStatus"))?;
    let number = |name: &'static str| -> Result<Option<u32>, OutcomeError> {
        param(name)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| OutcomeError::Parameter(name)))
            .transpose()
    };
    let sequence_number =
        number("SequenceNumber")?.unwrap_or(if call_status.is_final() { u32::MAX } else { 0 });
    let sip_response_code = number("SipResponseCode")?
        .map(|c| u16::try_from(c).map_err(|_| OutcomeError::Parameter("SipResponseCode")))
        .transpose()?;
    Ok(StatusUpdate {
        call_sid: call_sid.to_owned(),
        call_status,
        sequence_number,
        call_duration: number("CallDuration")?,
        answered_by: param("AnsweredBy")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        sip_response_code,
    })
}

/// What Twilio puts in `From` when the caller's number is withheld: the keypad spellings of
/// ANONYMOUS, RESTRICTED, UNAVAILABLE and BLOCKED (valid E.164 in form, nobody's number).
const WITHHELD: &[&str] = &["+266696687", "+7378742833", "+86282452253", "+8656696"];

/// A voicemail's end (`<Record action>`, or its transcription callback: both carry the
/// recording) as the event.
pub fn voicemail_recorded<'a>(
    param: impl Fn(&str) -> Option<&'a str>,
) -> Result<VoicemailRecorded, OutcomeError> {
    let present = |name: &str| param(name).filter(|s| !s.is_empty());
    Ok(VoicemailRecorded {
        call_sid: present("CallSid")
            .ok_or(OutcomeError::Parameter("CallSid"))?
            .to_owned(),
        caller: present("From")
            .filter(|f| !WITHHELD.contains(f))
            .and_then(|f| PhoneNumber::parse(f).ok())
            .map(|p| p.as_str().to_owned()),
        recording_url: present("RecordingUrl")
            .ok_or(OutcomeError::Parameter("RecordingUrl"))?
            .to_owned(),
        recording_sid: present("RecordingSid").map(str::to_owned),
        duration_seconds: present("RecordingDuration")
            .map(|d| {
                d.parse()
                    .map_err(|_| OutcomeError::Parameter("RecordingDuration"))
            })
            .transpose()?,
    })
}

/// A transcription callback as the event; `None` unless Twilio has text (`TranscriptionStatus`
/// `completed`; a failed one, or one with nothing heard, has none to announce).
pub fn voicemail_transcribed<'a>(
    param: impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<VoicemailTranscribed>, OutcomeError> {
    let recording = voicemail_recorded(&param)?;
    let text = param("TranscriptionText")
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let (Some("completed"), Some(text)) = (param("TranscriptionStatus"), text) else {
        return Ok(None);
    };
    Ok(Some(VoicemailTranscribed {
        call_sid: recording.call_sid,
        caller: recording.caller,
        recording_url: recording.recording_url,
        recording_sid: recording.recording_sid,
        transcription: text.to_owned(),
    }))
}

impl Outcomes {
    /// Records a status callback; publishes `Call Completed` when the call has its final status
    /// and no earlier delivery published it. Returns the event published, if any.
    ///
    /// The event is published first and marked (`once#completed#<CallSid>`) after: a final
    /// callback delivered again after a failed publish publishes, one after a successful
    /// publish does not.
    pub async fn status<'a>(
        &self,
        param: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<CallCompleted>, OutcomeError> {
        let update = status_update(param)?;
        let marker = format!("completed#{}", update.call_sid);
        let call = match self.ledger.record_status(&update).await? {
            // The first final status: nothing can have announced it yet.
            StatusRecorded::Applied {
                call,
                reached_final: true,
            } => Some(call),
            // The final status was recorded before, by a delivery that may have failed to
            // publish it.
            StatusRecorded::Applied { call, .. } if call.final_status.is_some() => {
                (!self.ledger.marked(&marker).await?).then_some(call)
            }
            StatusRecorded::Applied { .. } => None,
            // The final callback again (Twilio's redelivery, or a retry after our 503).
            StatusRecorded::Stale if update.call_status.is_final() => {
                if self.ledger.marked(&marker).await? {
                    None
                } else {
                    self.ledger.call(&update.call_sid).await?
                }
            }
            StatusRecorded::Stale => None,
        };
        let Some(event) = call.as_ref().and_then(CallCompleted::from_call) else {
            return Ok(None);
        };
        self.bus
            .publish(&DomainEvent::CallCompleted(event.clone()))
            .await?;
        self.mark_published(&marker).await;
        Ok(Some(event))
    }

    /// Publishes `Voicemail Recorded` unless an earlier delivery of this recording did.
    pub async fn voicemail<'a>(
        &self,
        param: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<bool, OutcomeError> {
        let event = voicemail_recorded(param)?;
        let marker = format!(
            "voicemail#{}",
            event.recording_sid.as_deref().unwrap_or(&event.call_sid)
        );
        if self.ledger.marked(&marker).await? {
            return Ok(false);
        }
        self.bus
            .publish(&DomainEvent::VoicemailRecorded(event))
            .await?;
        self.mark_published(&marker).await;
        Ok(true)
    }

    /// A transcription callback: `Voicemail Recorded` first if the recording's own webhook could
    /// not publish it (this callback carries the recording too), then `Voicemail Transcribed`
    /// unless an earlier delivery published it. Returns whether the transcription was published.
    pub async fn transcription<'a>(
        &self,
        param: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<bool, OutcomeError> {
        self.voicemail(&param).await?;
        let Some(event) = voicemail_transcribed(&param)? else {
            return Ok(false);
        };
        let marker = format!(
            "transcribed#{}",
            event.recording_sid.as_deref().unwrap_or(&event.call_sid)
        );
        if self.ledger.marked(&marker).await? {
            return Ok(false);
        }
        self.bus
            .publish(&DomainEvent::VoicemailTranscribed(event))
            .await?;
        self.mark_published(&marker).await;
        Ok(true)
    }

    /// After a successful publish. A failure here is logged, not answered: answering it as an
    /// error would have the event published again, which is worse than a marker missing.
    async fn mark_published(&self, marker: &str) {
        if let Err(e) = self.ledger.first_time(marker).await {
            tracing::warn!(error = %e, "event published, but not marked in the ledger: a redelivery may publish it again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn a_status_callback_is_read_whole() {
        let update = status_update(params(&[
            ("CallSid", "CA1"),
            ("CallStatus", "completed"),
            ("SequenceNumber", "3"),
            ("CallDuration", "42"),
            ("AnsweredBy", "machine_end_beep"),
            ("SipResponseCode", "200"),
        ]))
        .unwrap();
        assert_eq!(update.call_status, CallStatus::Completed);
        assert_eq!(
            (
                update.sequence_number,
                update.call_duration,
                update.sip_response_code
            ),
            (3, Some(42), Some(200))
        );
        assert_eq!(update.answered_by.as_deref(), Some("machine_end_beep"));
    }

    #[test]
    fn without_a_sequence_number_final_is_newest_and_progress_oldest() {
        let seq = |status| {
            status_update(params(&[("CallSid", "CA1"), ("CallStatus", status)]))
                .unwrap()
                .sequence_number
        };
        assert_eq!(seq("completed"), u32::MAX);
        assert_eq!(seq("ringing"), 0);
    }

    #[test]
    fn malformed_callbacks_name_the_parameter() {
        for (pairs, name) in [
            (&[("CallStatus", "completed")][..], "CallSid"),
            (
                &[("CallSid", "CA1"), ("CallStatus", "answered")][..],
                "CallStatus",
            ),
            (
                &[
                    ("CallSid", "CA1"),
                    ("CallStatus", "ringing"),
                    ("SequenceNumber", "x"),
                ][..],
                "SequenceNumber",
            ),
        ] {
            match status_update(params(pairs)) {
                Err(OutcomeError::Parameter(n)) => assert_eq!(n, name),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_withheld_caller_is_left_out() {
        for (from, caller) in [
            ("+81312345678", Some("+81312345678")),
            ("anonymous", None),
            ("+266696687", None),
            ("", None),
        ] {
            let event = voicemail_recorded(params(&[
                ("CallSid", "CA1"),
                ("From", from),
                ("RecordingUrl", "https://api.twilio.com/r"),
                ("RecordingDuration", "17"),
            ]))
            .unwrap();
            assert_eq!(event.caller.as_deref(), caller, "{from}");
            assert_eq!(event.duration_seconds, Some(17));
        }
    }
}
