//! An alert call as the person who answers hears it: the message, "press 1 to acknowledge, * to
//! repeat", a bounded number of times; what a key does; what a machine hears.
//!
//! Only a keypress acknowledges. A machine (Twilio's `AnsweredBy` is `machine_*` or `fax`) hears
//! a short notice and the call ends unacknowledged, so the escalation goes on; `human` and
//! `unknown` get the prompt (a person on a slow greeting must still be able to press 1).
//!
//! # Key 1, once
//! The ledger decides first (`Ledger::acknowledge`: one conditional write, not acknowledged, not
//! closed, before the step's deadline), then Step Functions is told (`SendTaskSuccess`), then the
//! ledger records that it was (`delivered_at`). An acknowledgement is never taken back: until it
//! is delivered, every key 1 (`First`, or `Already` from a replay or from the SDK's retry of a
//! write whose first answer was lost) sends it again, and the call's final status sends it once
//! more (the person pressed 1 and hung up while Step Functions was down). Only a delivered one is
//! confirmed without sending anything.
//!
//! What the person hears after `SendTaskSuccess`:
//! - it answered: the confirmation (a failure to record `delivered_at` is logged: the next key
//!   sends it again, see below);
//! - unavailable or no answer: "could not confirm, press 1 again", the prompt again;
//! - the step is closed (`TaskTimedOut`, ...): the "timed out" notice. Rarely this is wrong: when
//!   an earlier send landed but its answer was lost (or `delivered_at` was not written), Step
//!   Functions has the acknowledgement and answers the next send with `TaskTimedOut` too;
//! - refused (access denied, a bad request): "could not be recorded", the call ends, an error
//!   is logged; pressing again cannot help.
//!
//! `SendTaskSuccess` and `SendTaskFailure` are sent in one attempt (no SDK retry): a retry of
//! a send that landed would be answered `TaskTimedOut`. The person's next key is the retry.
//! Key 1 costs at most the acknowledgement and `delivered_at` (each bounded by the shared SDK's
//! 3 s operation timeout) and one `SendTaskSuccess` attempt (1 s): inside the function's 10 s
//! and Twilio's 15 s.
//!
//! # A call that ends without key 1
//! Its final status callback closes the step in the ledger (first closer wins) and sends
//! `SendTaskFailure("Alert.NotAcknowledged")`, so the escalation calls the next contact at once
//! instead of waiting for the step's timeout.
//!
//! Where a message is lost between the two systems (`SendTaskFailure` not sent, an
//! acknowledgement never delivered), the step's `TimeoutSeconds` in the state machine is the
//! backstop: the escalation goes on, late, and never stops on a false acknowledgement from us.

use std::num::NonZeroU8;

use serde_json::json;
use tracing::{error, info, warn};
use twilio_voice::ledger::{
    AckOutcome, Acknowledgement, AlertRecord, AlertStep, CallStatus, IdempotencyKey, Ledger,
    LedgerError,
};
use twilio_voice::stepfunctions::{Escalations, SfnError};
use twilio_voice::twiml::{Gather, GatherInput, Method, Redirect, Say, VoiceResponse};

use crate::flow::Links;
use crate::route::Route;

pub use twilio_voice::alerts::NOT_ACKNOWLEDGED;

/// Seconds the prompt waits for a key after it has been spoken.
pub const KEY_TIMEOUT_SECONDS: u32 = 5;

/// With the ledger unreadable the step's own `max_prompts` is unknown: `/alert` apologises and
/// comes back with the next prompt number up to this one (no policy offers more prompts), then
/// hangs up, so an outage never keeps a call looping.
pub const UNREAD_PROMPTS_CEILING: u8 = 5;

/// The language of the fixed phrases: Japanese for `ja*`, English otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Japanese,
    English,
}

impl Language {
    pub fn of(tag: &str) -> Self {
        match tag.get(..2) {
            Some(ja) if ja.eq_ignore_ascii_case("ja") => Self::Japanese,
            _ => Self::English,
        }
    }
    fn pick(self, english: &'static str, japanese: &'static str) -> &'static str {
        match self {
            Self::Japanese => japanese,
            Self::English => english,
        }
    }
}

/// What an alert call says, from its step in the ledger.
#[derive(Debug, Clone)]
pub struct Script<'a> {
    pub key: &'a IdempotencyKey,
    pub message: &'a str,
    /// The `<Say>` language (`ja-JP`, `en-US`); the fixed phrases follow it.
    pub language: &'a str,
    pub voice: Option<&'a str>,
    /// Times the prompt is spoken before the call ends unacknowledged.
    pub max_prompts: NonZeroU8,
}

/// Twilio's `AnsweredBy` for an answering machine, a voicemail box or a fax.
pub fn is_machine(answered_by: Option<&str>) -> bool {
    answered_by.is_some_and(|a| a.starts_with("machine_") || a == "fax")
}

impl<'a> Script<'a> {
    /// What the step in the ledger says.
    pub fn of(record: &'a AlertRecord) -> Self {
        let speech = &record.step.speech;
        Self {
            key: &record.key,
            message: &speech.message,
            language: &speech.language,
            voice: speech.voice.as_deref(),
            max_prompts: record.step.max_prompts,
        }
    }

    fn lang(&self) -> Language {
        Language::of(self.language)
    }

    fn say(&self, text: &str) -> Say {
        let say = Say::new(text).language(self.language);
        match self.voice {
            Some(voice) => say.voice(voice),
            None => say,
        }
    }

    fn phrase(&self, english: &'static str, japanese: &'static str) -> Say {
        self.say(self.lang().pick(english, japanese))
    }

    /// `/alert`: the `prompt`-th time the message and the keys are offered.
    pub fn prompt(&self, prompt: u8, answered_by: Option<&str>, links: &Links) -> VoiceResponse {
        if is_machine(answered_by) {
            // Left on the machine as a trace; it does not acknowledge, the next contact is called.
            return VoiceResponse::new()
                .say(self.phrase(
                    "This is an automated alert call. It can only be acknowledged by pressing a \
                     key during a live call.",
                    "自動音声によるアラートのお知らせです。確認は、通話中のキー操作でのみ受け付けます。",
                ))
                .say(self.say(self.message))
                .hangup();
        }
        self.offer(VoiceResponse::new(), prompt, links)
    }

    /// The message and the keys, then the next prompt when nothing is pressed; past
    /// `max_prompts`, goodbye.
    fn offer(&self, r: VoiceResponse, prompt: u8, links: &Links) -> VoiceResponse {
        if prompt > self.max_prompts.get() {
            return r
                .say(self.phrase(
                    "No key was pressed. The alert was not acknowledged. Goodbye.",
                    "キー操作が確認できなかったため、アラートは未確認のままです。失礼いたします。",
                ))
                .hangup();
        }
        let gather = Gather::new()
            .input(GatherInput::Dtmf)
            .num_digits(1)
            .timeout(KEY_TIMEOUT_SECONDS)
            // `#` is a key like any other here (it repeats), not "done".
            .finish_on_key("")
            .action(links.to(&Route::AlertKeys {
                key: self.key.clone(),
                prompt,
            }))
            .method(Method::Post)
            .say(self.say(self.message))
            .say(self.phrase(
                "Press 1 to acknowledge, or star to repeat.",
                "確認した場合は1を、もう一度聞く場合は米印を押してください。",
            ));
        let next = Route::Alert {
            key: self.key.clone(),
            prompt: prompt.saturating_add(1),
        };
        r.gather(gather)
            .redirect(Redirect::new(links.to(&next)).method(Method::Post))
    }

    /// A key other than 1 at `prompt`: the message again (it counts as a prompt).
    pub fn repeat(&self, prompt: u8, links: &Links) -> VoiceResponse {
        self.offer(VoiceResponse::new(), prompt.saturating_add(1), links)
    }

    /// Key 1 acknowledged the step (now, or by an earlier delivery of the same key).
    pub fn acknowledged(&self) -> VoiceResponse {
        VoiceResponse::new()
            .say(self.phrase(
                "Thank you. The alert has been acknowledged. Goodbye.",
                "確認を受け付けました。ありがとうございました。失礼いたします。",
            ))
            .hangup()
    }

    /// Key 1 after the step's deadline, or on a step Step Functions has closed.
    pub fn too_late(&self) -> VoiceResponse {
        VoiceResponse::new()
            .say(self.phrase(
                "This alert step has timed out. Your key did not acknowledge the alert. Goodbye.",
                "このアラートの応答期限が過ぎたため、確認として受け付けられませんでした。失礼いたします。",
            ))
            .hangup()
    }

    /// Key 1 recorded but not confirmed by Step Functions (unavailable, or no answer): say so and
    /// offer the key again rather than confirm falsely; the next key 1 sends it again.
    pub fn try_again(&self, prompt: u8, links: &Links) -> VoiceResponse {
        let r = VoiceResponse::new().say(self.phrase(
            "Sorry, your key could not be confirmed. Please press 1 again.",
            "申し訳ありません。確認を完了できませんでした。もう一度1を押してください。",
        ));
        // The same prompt: the person is there and pressing keys; no input still ends the call.
        // Never prompt 0 (not a route) nor past the last.
        self.offer(r, prompt.clamp(1, self.max_prompts.get()), links)
    }

    /// Past the last prompt, an acknowledgement Step Functions has not confirmed yet: the call
    /// ends, and its final status sends it once more.
    pub fn unconfirmed(&self) -> VoiceResponse {
        VoiceResponse::new()
            .say(self.phrase(
                "Sorry, your key could not be confirmed yet. Goodbye.",
                "申し訳ありません。確認を完了できませんでした。失礼いたします。",
            ))
            .hangup()
    }

    /// Key 1 that Step Functions refused (access denied, a bad request): pressing again cannot
    /// help, so the call ends and the person knows nothing was acknowledged.
    pub fn not_recorded(&self) -> VoiceResponse {
        VoiceResponse::new()
            .say(self.phrase(
                "Sorry, your key could not be recorded. The alert was not acknowledged. Goodbye.",
                "申し訳ありません。キー操作を記録できませんでした。アラートは未確認のままです。失礼いたします。",
            ))
            .hangup()
    }
}

/// An alert whose step the ledger no longer has (expired, or never written): nothing to
/// acknowledge. Japanese first, then English, since the step's language is unknown.
pub fn gone() -> VoiceResponse {
    VoiceResponse::new()
        .say(Say::new("このアラートは終了しています。失礼いたします。").language("ja-JP"))
        .say(Say::new("This alert has ended. Goodbye.").language("en-US"))
        .hangup()
}

/// Key 1 when the ledger could not be asked: nothing is known to be recorded, so the person
/// hears "try again" (in both languages: the step's is unknown) and the prompt comes back.
fn ledger_unavailable(key: &IdempotencyKey, prompt: u8, links: &Links) -> VoiceResponse {
    VoiceResponse::new()
        .say(
            Say::new("申し訳ありません。確認を記録できませんでした。もう一度お試しください。")
                .language("ja-JP"),
        )
        .say(
            Say::new("Sorry, the acknowledgement could not be recorded. Please try again.")
                .language("en-US"),
        )
        .redirect(
            Redirect::new(links.to(&Route::Alert {
                key: key.clone(),
                prompt,
            }))
            .method(Method::Post),
        )
}

/// `/alert` when the ledger could not be read: an apology (both languages) and the next prompt
/// number, so that a short outage costs a prompt, not the call (Twilio's application error), and
/// a long one ends at [`UNREAD_PROMPTS_CEILING`].
fn step_unreadable(key: &IdempotencyKey, prompt: u8, links: &Links) -> VoiceResponse {
    let next = prompt.saturating_add(1);
    if next > UNREAD_PROMPTS_CEILING {
        return VoiceResponse::new()
            .say(
                Say::new("申し訳ありません。アラートを読み込めませんでした。失礼いたします。")
                    .language("ja-JP"),
            )
            .say(Say::new("Sorry, the alert could not be read. Goodbye.").language("en-US"))
            .hangup();
    }
    VoiceResponse::new()
        .say(
            Say::new("申し訳ありません。アラートを読み込めませんでした。少々お待ちください。")
                .language("ja-JP"),
        )
        .say(Say::new("Sorry, the alert could not be read. Please hold.").language("en-US"))
        .redirect(
            Redirect::new(links.to(&Route::Alert {
                key: key.clone(),
                prompt: next,
            }))
            .method(Method::Post),
        )
}

/// Epoch seconds as RFC 3339 in UTC (`2026-11-25T14:36:31Z`).
pub fn rfc3339(epoch_seconds: u64) -> String {
    let t = i64::try_from(epoch_seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The ledger that holds each alert step, and Step Functions waiting on it.
#[derive(Debug, Clone)]
pub struct Alerts {
    pub ledger: Ledger,
    pub escalations: Escalations,
}

/// What became of one `SendTaskSuccess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Step Functions took it.
    Delivered,
    /// Unavailable, or no answer: it may or may not have landed; send it again later.
    Unavailable,
    /// The step is over (it timed out, or an earlier send whose answer was lost took it).
    Closed,
    /// Refused: a deployment fault; sending again cannot help.
    Refused,
}

impl Alerts {
    fn past_deadline(&self, record: &AlertRecord) -> bool {
        let now = self
            .ledger
            .time()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        now >= record.step.step_deadline
    }

    /// `/alert`: the prompt, or what the step's state calls for instead. Never an error: the
    /// person is on the line (a 5xx would play them Twilio's application error).
    pub async fn call(
        &self,
        key: &IdempotencyKey,
        prompt: u8,
        answered_by: Option<&str>,
        call_sid: &str,
        links: &Links,
    ) -> VoiceResponse {
        let record = match self.ledger.alert_step(key).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                warn!(call_sid, "alert call for a step the ledger does not hold");
                return gone();
            }
            Err(e) => {
                warn!(call_sid, error = %e, prompt, "alert step unreadable: apologising, next prompt");
                return step_unreadable(key, prompt, links);
            }
        };
        let script = Script::of(&record);
        let step = &record.step;
        if is_machine(answered_by) {
            info!(call_sid, alert_id = %step.alert_id, attempt = step.attempt, answered_by, "alert call reached a machine: not acknowledged");
        }
        match &record.acknowledged {
            Some(_) if record.delivered => script.acknowledged(),
            // Key 1 was recorded but not confirmed (the prompt came back after "press 1
            // again"): send it again now.
            Some(ack) => match self.deliver(&record, ack).await {
                Delivery::Unavailable if prompt > step.max_prompts.get() => script.unconfirmed(),
                delivery => script.after(delivery, prompt, links),
            },
            None if record.closed || self.past_deadline(&record) => script.too_late(),
            None => script.prompt(prompt, answered_by, links),
        }
    }

    /// `/alert-keys`: the key pressed at `prompt`. Never an error: the person is on the line,
    /// and a failure is told to them (and logged) rather than turned into Twilio's error message.
    pub async fn key(
        &self,
        key: &IdempotencyKey,
        prompt: u8,
        digits: Option<&str>,
        call_sid: &str,
        links: &Links,
    ) -> VoiceResponse {
        if digits.map(str::trim) != Some("1") {
            return match self.ledger.alert_step(key).await {
                Ok(Some(record)) => Script::of(&record).repeat(prompt, links),
                Ok(None) => gone(),
                Err(e) => {
                    warn!(call_sid, error = %e, "alert step unreadable; prompting again");
                    VoiceResponse::new().redirect(
                        Redirect::new(links.to(&Route::Alert {
                            key: key.clone(),
                            prompt: prompt.saturating_add(1),
                        }))
                        .method(Method::Post),
                    )
                }
            };
        }
        match self.ledger.acknowledge(key, call_sid).await {
            Ok(AckOutcome::Already(record)) if record.delivered => {
                info!(call_sid, alert_id = %record.step.alert_id, "key 1 again on a delivered acknowledgement: nothing sent");
                Script::of(&record).acknowledged()
            }
            // `Already` and not delivered: a replay after "press 1 again", or the SDK's retry of
            // our own write whose first answer was lost. Either way it is sent (again).
            Ok(AckOutcome::First(record) | AckOutcome::Already(record)) => {
                let Some(ack) = &record.acknowledged else {
                    error!(call_sid, "an acknowledged step without its acknowledgement");
                    return Script::of(&record).not_recorded();
                };
                let delivery = self.deliver(&record, ack).await;
                Script::of(&record).after(delivery, prompt, links)
            }
            Ok(AckOutcome::TimedOut(record)) => {
                info!(call_sid, alert_id = %record.step.alert_id, attempt = record.step.attempt, "key 1 after the step ended: not acknowledged");
                Script::of(&record).too_late()
            }
            Ok(AckOutcome::OtherCall | AckOutcome::Unknown) => {
                warn!(call_sid, "key 1 on a step that is not this call's");
                gone()
            }
            Err(e) => {
                warn!(call_sid, error = %e, "key 1 not recorded: the ledger is unavailable");
                ledger_unavailable(key, prompt, links)
            }
        }
    }

    /// Sends the acknowledgement the ledger holds to Step Functions (one attempt), and records
    /// that it was taken.
    async fn deliver(&self, record: &AlertRecord, ack: &Acknowledgement) -> Delivery {
        let step = &record.step;
        // The same document every time: built from what the ledger recorded.
        let output = json!({
            "acknowledged_by": step.contact,
            "acknowledged_at": rfc3339(ack.at),
            "call_sid": ack.call_sid,
            "attempt": step.attempt,
        })
        .to_string();
        let call_sid = ack.call_sid.as_str();
        match self.escalations.succeed(&step.task_token, &output).await {
            Ok(()) => {
                info!(call_sid, alert_id = %step.alert_id, attempt = step.attempt, "alert acknowledged");
                if let Err(e) = self.ledger.mark_delivered(&record.key).await {
                    // Step Functions has it; only a later key or the final status would send it
                    // again (and hear `TaskTimedOut`). Not the person's concern.
                    error!(call_sid, alert_id = %step.alert_id, error = %e, "acknowledgement delivered but not recorded as delivered");
                }
                Delivery::Delivered
            }
            Err(SfnError::StepClosed(code)) => {
                info!(call_sid, alert_id = %step.alert_id, code, "acknowledgement for a step Step Functions has closed");
                Delivery::Closed
            }
            Err(e @ SfnError::Unavailable(_)) => {
                warn!(call_sid, alert_id = %step.alert_id, error = %e, "acknowledgement not confirmed by Step Functions: kept, to be sent again");
                Delivery::Unavailable
            }
            Err(e) => {
                error!(call_sid, alert_id = %step.alert_id, error = %e, "Step Functions refused the acknowledgement: check the function's permissions");
                Delivery::Refused
            }
        }
    }

    /// A status callback: at a final status of an alert call, fails the step if nobody
    /// acknowledged it (so the escalation moves on at once), or sends an acknowledgement Step
    /// Functions has not taken yet (key 1, then a hang-up while it was unavailable). `true` when
    /// this callback resumed the step. Only a ledger failure is an error (the callback may be
    /// sent again); a send that fails is logged, and the step's `TimeoutSeconds` ends it.
    pub async fn status(
        &self,
        call_sid: &str,
        call_status: CallStatus,
        answered_by: Option<&str>,
    ) -> Result<bool, LedgerError> {
        if !call_status.is_final() {
            return Ok(false);
        }
        let Some(call) = self.ledger.call(call_sid).await? else {
            return Ok(false);
        };
        let Some(key) = call
            .request_key
            .as_deref()
            .filter(|k| AlertStep::is_alert_key(k))
        else {
            return Ok(false);
        };
        let key = IdempotencyKey::new(key).map_err(|_| LedgerError::Malformed("request_key"))?;
        let Some(record) = self.ledger.alert_step(&key).await? else {
            return Ok(false);
        };
        if let Some(ack) = &record.acknowledged {
            if record.delivered {
                return Ok(false);
            }
            return Ok(self.deliver(&record, ack).await == Delivery::Delivered);
        }
        if record.closed {
            return Ok(false);
        }
        // `None`: a key 1 or another callback (or a refused call) got there first.
        let Some(record) = self.ledger.close_alert_step(&key).await? else {
            return Ok(false);
        };
        let step = &record.step;
        let cause = json!({
            "call_status": call_status.as_str(),
            "answered_by": answered_by.or(call.answered_by.as_deref()),
        })
        .to_string();
        match self
            .escalations
            .fail(&step.task_token, NOT_ACKNOWLEDGED, &cause)
            .await
        {
            Ok(()) => {
                info!(call_sid, alert_id = %step.alert_id, attempt = step.attempt, call_status = call_status.as_str(), "alert call ended unacknowledged: next contact");
                Ok(true)
            }
            Err(SfnError::StepClosed(code)) => {
                info!(call_sid, alert_id = %step.alert_id, code, "alert call ended after its step closed");
                Ok(false)
            }
            Err(e) => {
                // Closed in the ledger, so nothing sends it again: the step's TimeoutSeconds
                // moves the escalation on, late.
                error!(call_sid, alert_id = %step.alert_id, error = %e, "step not failed in Step Functions: the escalation goes on at the step's timeout");
                Ok(false)
            }
        }
    }
}

impl Script<'_> {
    /// What key 1 (or the prompt after "press 1 again") hears once the send is over.
    fn after(&self, delivery: Delivery, prompt: u8, links: &Links) -> VoiceResponse {
        match delivery {
            Delivery::Delivered => self.acknowledged(),
            Delivery::Unavailable => self.try_again(prompt, links),
            Delivery::Closed => self.too_late(),
            Delivery::Refused => self.not_recorded(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        Links {
            base: "https://fn.example".into(),
        }
    }

    fn script<'a>(key: &'a IdempotencyKey, language: &'a str) -> Script<'a> {
        Script {
            key,
            message: "CPU使用率が高くなっています。",
            language,
            voice: Some("Polly.Takumi"),
            max_prompts: NonZeroU8::new(3).unwrap(),
        }
    }

    fn key() -> IdempotencyKey {
        IdempotencyKey::new("alert:cpu:2").unwrap()
    }

    #[test]
    fn the_prompt_gathers_one_key_then_offers_the_next_prompt() {
        let key = key();
        let xml = script(&key, "ja-JP")
            .prompt(2, Some("human"), &links())
            .to_xml();
        assert!(
            xml.contains(
                r#"<Gather input="dtmf" action="https://fn.example/alert-keys?key=alert%3Acpu%3A2&amp;prompt=2" method="POST" timeout="5" numDigits="1" finishOnKey="">"#
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                r#"<Say language="ja-JP" voice="Polly.Takumi">CPU使用率が高くなっています。</Say>"#
            ),
            "{xml}"
        );
        assert!(
            xml.contains("確認した場合は1を、もう一度聞く場合は米印を押してください。"),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<Redirect method="POST">https://fn.example/alert?key=alert%3Acpu%3A2&amp;prompt=3</Redirect>"#),
            "{xml}"
        );
        let en = script(&key, "en-US").prompt(1, None, &links()).to_xml();
        assert!(
            en.contains("Press 1 to acknowledge, or star to repeat."),
            "{en}"
        );
    }

    #[test]
    fn past_the_last_prompt_the_call_ends() {
        let key = key();
        let s = script(&key, "ja-JP");
        let xml = s.prompt(4, None, &links()).to_xml();
        assert!(!xml.contains("<Gather"), "{xml}");
        assert!(
            xml.contains("未確認") && xml.ends_with("<Hangup/></Response>"),
            "{xml}"
        );
        // A repeat at the last prompt is the prompt after it.
        assert_eq!(s.repeat(3, &links()), s.prompt(4, None, &links()));
        assert!(s.repeat(2, &links()).to_xml().contains("prompt=3"));
    }

    #[test]
    fn a_machine_hears_a_notice_and_no_prompt() {
        let key = key();
        for answered_by in [
            "machine_start",
            "machine_end_beep",
            "machine_end_silence",
            "machine_end_other",
            "fax",
        ] {
            let xml = script(&key, "en-US")
                .prompt(1, Some(answered_by), &links())
                .to_xml();
            assert!(!xml.contains("<Gather"), "{answered_by}: {xml}");
            assert!(xml.contains("automated alert"), "{xml}");
            assert!(xml.ends_with("<Hangup/></Response>"), "{xml}");
        }
        for person in [None, Some("human"), Some("unknown")] {
            let xml = script(&key, "en-US").prompt(1, person, &links()).to_xml();
            assert!(xml.contains("<Gather"), "{person:?}: {xml}");
        }
    }

    #[test]
    fn try_again_offers_the_key_again_without_confirming() {
        let key = key();
        let s = script(&key, "ja-JP");
        let xml = s.try_again(3, &links()).to_xml();
        assert!(
            xml.contains("もう一度1を押してください") && xml.contains("<Gather"),
            "{xml}"
        );
        assert!(!xml.contains("確認を受け付けました"), "{xml}");
        assert!(xml.contains("prompt=3"), "{xml}");
        // Never a prompt the routes refuse (0), never past the last.
        assert!(
            s.try_again(0, &links())
                .to_xml()
                .contains("prompt=1\" method")
        );
        assert!(
            s.try_again(9, &links())
                .to_xml()
                .contains("prompt=3\" method")
        );
        assert!(s.not_recorded().to_xml().ends_with("<Hangup/></Response>"));
        assert!(s.acknowledged().to_xml().contains("確認を受け付けました"));
        assert!(s.too_late().to_xml().contains("応答期限"));
        assert!(gone().to_xml().ends_with("<Hangup/></Response>"));
    }

    #[test]
    fn an_unreadable_step_costs_a_prompt_and_ends_at_the_ceiling() {
        let key = key();
        let xml = step_unreadable(&key, 2, &links()).to_xml();
        assert!(
            xml.contains("could not be read") && xml.contains("prompt=3</Redirect>"),
            "{xml}"
        );
        let last = step_unreadable(&key, UNREAD_PROMPTS_CEILING, &links()).to_xml();
        assert!(
            !last.contains("<Redirect") && last.ends_with("<Hangup/></Response>"),
            "{last}"
        );
    }

    #[test]
    fn acknowledged_at_is_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn language_follows_the_tag() {
        assert_eq!(Language::of("ja-JP"), Language::Japanese);
        assert_eq!(Language::of("ja"), Language::Japanese);
        assert_eq!(Language::of("en-US"), Language::English);
        assert_eq!(Language::of(""), Language::English);
    }
}
