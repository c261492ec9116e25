//! An alert call as the person who answers hears it: the message, "press 1 to acknowledge, * to
//! repeat", a bounded number of times; what a key does; what a machine hears.
//!
//! Only a keypress acknowledges. A machine (Twilio's `AnsweredBy` is `machine_*` or `fax`) hears
//! a short notice and the call ends unacknowledged, so the escalation goes on; `human` and
//! `unknown` get the prompt (a person on a slow greeting must still be able to press 1).

use twilio_voice::ledger::IdempotencyKey;
use twilio_voice::twiml::{Gather, GatherInput, Method, Redirect, Say, VoiceResponse};

use crate::flow::Links;
use crate::route::Route;

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

impl Script<'_> {
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
    fn language_follows_the_tag() {
        assert_eq!(Language::of("ja-JP"), Language::Japanese);
        assert_eq!(Language::of("ja"), Language::Japanese);
        assert_eq!(Language::of("en-US"), Language::English);
        assert_eq!(Language::of(""), Language::English);
    }
}
