//! An alert call as the person who answers hears it: the message, "press 1 to acknowledge, * to
//! repeat", a bounded number of times; what a key does; what a machine hears.
//!
//! Only a keypress acknowledges. A machine (Twilio's `AnsweredBy` is `machine_*` or `fax`) hears
//! a short notice and the call ends unacknowledged, so the escalation goes on; `human` and
//! `unknown` get the prompt (a person on a slow greeting must still be able to press 1).
//!
//! # Key 1, once
//! The ledger decides first (`Ledger::acknowledge`: one conditional write, not acknowledged, not
//! closed, before the step's deadline), then Step Functions is told (`SendTaskSuccess`). So a
//! replayed webhook, or the key pressed twice, finds the step acknowledged and sends nothing.
//! When Step Functions cannot be told, the acknowledgement is taken back
//! (`retract_acknowledgement`) before the person hears "try again", so that the next key 1 can
//! still acknowledge; a step Step Functions reports closed (it timed out first) is closed in the
//! ledger too, so a replay hears "timed out" again rather than a confirmation.
//! Each of these requests is bounded by the shared SDK's 3 s operation timeout, so key 1 costs at
//! most three of them (acknowledge, `SendTaskSuccess`, retract): inside the function's 10 s and
//! Twilio's 15 s.
//!
//! # A call that ends without key 1
//! Its final status callback closes the step in the ledger (first closer wins) and sends
//! `SendTaskFailure("Alert.NotAcknowledged")`, so the escalation calls the next contact at once
//! instead of waiting for the step's timeout.
//!
//! Where a write is lost between the two systems (the ledger or Step Functions failing in the
//! middle), the step's `TimeoutSeconds` in the state machine is the backstop: the escalation goes
//! on, late, and never stops on a false acknowledgement from us.

use serde_json::json;
use tracing::{error, info, warn};
use twilio_voice::ledger::{
    AckOutcome, AlertRecord, AlertStep, CallStatus, IdempotencyKey, Ledger, LedgerError,
};
use twilio_voice::stepfunctions::{Escalations, SfnError};
use twilio_voice::twiml::{Gather, GatherInput, Method, Redirect, Say, VoiceResponse};

use crate::flow::Links;
use crate::route::Route;

/// The error a step fails with when its call ended without key 1 (what the state machine's
/// `Catch` sees).
pub const NOT_ACKNOWLEDGED: &str = "Alert.NotAcknowledged";

/// Seconds the prompt waits for a key after it has been spoken.
pub const KEY_TIMEOUT_SECONDS: u32 = 5;

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
    pub max_prompts: u8,
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
        if prompt > self.max_prompts {
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

    /// Key 1 that could not be passed on (the ledger or Step Functions unavailable): nothing
    /// was acknowledged, so say so and offer the key again rather than confirm falsely.
    pub fn try_again(&self, prompt: u8, links: &Links) -> VoiceResponse {
        let r = VoiceResponse::new().say(self.phrase(
            "Sorry, the acknowledgement could not be recorded. Please try again.",
            "申し訳ありません。確認を記録できませんでした。もう一度お試しください。",
        ));
        // The same prompt: the person is there and pressing keys; no input still ends the call.
        self.offer(r, prompt.min(self.max_prompts), links)
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

    /// `/alert`: the prompt, or what the step's state calls for instead.
    pub async fn call(
        &self,
        key: &IdempotencyKey,
        prompt: u8,
        answered_by: Option<&str>,
        call_sid: &str,
        links: &Links,
    ) -> Result<VoiceResponse, LedgerError> {
        let Some(record) = self.ledger.alert_step(key).await? else {
            warn!(call_sid, "alert call for a step the ledger does not hold");
            return Ok(gone());
        };
        let script = Script::of(&record);
        let step = &record.step;
        if is_machine(answered_by) {
            info!(call_sid, alert_id = %step.alert_id, attempt = step.attempt, answered_by, "alert call reached a machine: not acknowledged");
        }
        Ok(if record.acknowledged.is_some() {
            script.acknowledged()
        } else if record.closed || self.past_deadline(&record) {
            script.too_late()
        } else {
            script.prompt(prompt, answered_by, links)
        })
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
            Ok(AckOutcome::First(record)) => self.deliver(&record, prompt, links).await,
            Ok(AckOutcome::Already(record)) => {
                info!(call_sid, alert_id = %record.step.alert_id, "key 1 again on an acknowledged step: nothing sent");
                Script::of(&record).acknowledged()
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

    /// Tells Step Functions about the acknowledgement the ledger just recorded.
    async fn deliver(&self, record: &AlertRecord, prompt: u8, links: &Links) -> VoiceResponse {
        let script = Script::of(record);
        let step = &record.step;
        let Some(ack) = &record.acknowledged else {
            // `First` always carries it; an item without it cannot be confirmed.
            return script.try_again(prompt, links);
        };
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
                script.acknowledged()
            }
            Err(SfnError::StepClosed(code)) => {
                info!(call_sid, alert_id = %step.alert_id, code, "key 1 on a step Step Functions has closed: not acknowledged");
                // Closed there: closed here too, so a replay is answered "timed out" again.
                if self.retract(record, ack).await
                    && let Err(e) = self.ledger.close_alert_step(&record.key).await
                {
                    warn!(call_sid, error = %e, "closed step not recorded as closed");
                }
                script.too_late()
            }
            Err(e) => {
                error!(call_sid, alert_id = %step.alert_id, error = %e, "acknowledgement not delivered to Step Functions; asking the person to try again");
                self.retract(record, ack).await;
                script.try_again(prompt, links)
            }
        }
    }

    /// Takes back an acknowledgement Step Functions did not take; `true` when it is gone.
    async fn retract(
        &self,
        record: &AlertRecord,
        ack: &twilio_voice::ledger::Acknowledgement,
    ) -> bool {
        match self.ledger.retract_acknowledgement(&record.key, ack).await {
            Ok(retracted) => retracted,
            Err(e) => {
                // The ledger keeps an acknowledgement Step Functions never had: a replay would
                // be answered as acknowledged, and the step ends at its timeout.
                error!(call_sid = %ack.call_sid, alert_id = %record.step.alert_id, error = %e, "undelivered acknowledgement could not be taken back");
                false
            }
        }
    }

    /// A status callback: at a final status of an alert call that nobody acknowledged, closes
    /// the step and fails it, so the escalation moves on at once. `true` when this callback
    /// failed the step. Only a ledger failure is an error (the callback may be sent again).
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
        // `None`: acknowledged, or another callback (or a refused call) closed it first.
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
                error!(call_sid, alert_id = %step.alert_id, error = %e, "step not failed in Step Functions: the escalation goes on at the step's timeout");
                Ok(false)
            }
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
            max_prompts: 3,
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
            xml.contains("もう一度お試しください") && xml.contains("<Gather"),
            "{xml}"
        );
        assert!(!xml.contains("確認を受け付けました"), "{xml}");
        assert!(xml.contains("prompt=3"), "{xml}");
        assert!(s.acknowledged().to_xml().contains("確認を受け付けました"));
        assert!(s.too_late().to_xml().contains("応答期限"));
        assert!(gone().to_xml().ends_with("<Hangup/></Response>"));
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
