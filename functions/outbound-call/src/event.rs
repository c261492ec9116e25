//! The call event: the same JSON for a direct invoke, a schedule's input and the HTTP API's body.
//! It is checked whole before anything is sent: E.164 numbers, the destination allow-list,
//! exactly one of `twiml` / `url` / `say`, Twilio's size limits, https callbacks.

use serde::Deserialize;
use twilio_voice::calls::{
    CallOptions, CallRequest, Instructions, InvalidCall, MachineDetection, StatusCallbackEvent,
};
use twilio_voice::phone::{AllowList, PhoneError, PhoneNumber};
use twilio_voice::twiml::{Speech, VoiceResponse};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallEvent {
    pub to: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub twiml: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub say: Option<Speech>,
    #[serde(default)]
    pub status_callback: Option<String>,
    #[serde(default)]
    pub status_callback_events: Vec<StatusCallbackEvent>,
    #[serde(default)]
    pub timeout: Option<u32>,
    #[serde(default)]
    pub machine_detection: Option<MachineDetection>,
    #[serde(default)]
    pub record: Option<bool>,
    #[serde(default)]
    pub time_limit: Option<u32>,
    #[serde(default)]
    pub caller_id: Option<String>,
    #[serde(default)]
    pub send_digits: Option<String>,
}

/// Why an event is refused; nothing has been sent to Twilio.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event is not a call event: {0}")]
    Json(String),
    #[error("{field}: {source}")]
    Number {
        field: &'static str,
        source: PhoneError,
    },
    #[error("give exactly one of twiml, url or say")]
    Instructions,
    #[error("no from number: set TWILIO_FROM_NUMBER or give from in the event")]
    NoFrom,
    #[error("say.text is empty")]
    EmptySay,
    #[error(transparent)]
    Call(#[from] InvalidCall),
}

impl CallEvent {
    pub fn from_json(json: &[u8]) -> Result<Self, EventError> {
        serde_json::from_slice(json).map_err(|e| EventError::Json(e.to_string()))
    }

    pub fn from_value(value: serde_json::Value) -> Result<Self, EventError> {
        serde_json::from_value(value).map_err(|e| EventError::Json(e.to_string()))
    }

    /// The request Twilio will get, or why there will be none.
    pub fn into_request(
        self,
        default_from: Option<&PhoneNumber>,
        allowed: &AllowList,
    ) -> Result<CallRequest, EventError> {
        let to = PhoneNumber::parse(&self.to).map_err(|source| EventError::Number {
            field: "to",
            source,
        })?;
        allowed.check(&to).map_err(|source| EventError::Number {
            field: "to",
            source,
        })?;
        let from = match &self.from {
            Some(raw) => PhoneNumber::parse(raw).map_err(|source| EventError::Number {
                field: "from",
                source,
            })?,
            None => default_from.cloned().ok_or(EventError::NoFrom)?,
        };
        let instructions = match (self.twiml, self.url, self.say) {
            (Some(twiml), None, None) => Instructions::Twiml(twiml),
            (None, Some(url), None) => Instructions::Url(url),
            (None, None, Some(say)) => {
                if say.text().trim().is_empty() {
                    return Err(EventError::EmptySay);
                }
                Instructions::Twiml(VoiceResponse::new().say(say.to_say(None, None)).to_xml())
            }
            _ => return Err(EventError::Instructions),
        };
        let request = CallRequest {
            to,
            from,
            instructions,
            options: CallOptions {
                status_callback: self.status_callback,
                status_callback_events: self.status_callback_events,
                timeout: self.timeout,
                machine_detection: self.machine_detection,
                record: self.record,
                time_limit: self.time_limit,
                caller_id: self.caller_id,
                send_digits: self.send_digits,
            },
        };
        request.validate()?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allow() -> AllowList {
        AllowList::parse("+81,+1").unwrap()
    }

    fn from() -> PhoneNumber {
        "+15005550006".parse().unwrap()
    }

    fn request(value: serde_json::Value) -> Result<CallRequest, EventError> {
        CallEvent::from_value(value)?.into_request(Some(&from()), &allow())
    }

    #[test]
    fn japanese_say_becomes_inline_twiml() {
        let r = request(json!({"to": "+819012345678",
            "say": {"text": "サーバーが応答していません。", "language": "ja-JP", "voice": "Polly.Mizuki", "loop": 2}}))
        .unwrap();
        assert_eq!(r.from, from());
        assert_eq!(
            r.instructions,
            Instructions::Twiml(
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="ja-JP" voice="Polly.Mizuki" loop="2">サーバーが応答していません。</Say></Response>"#.into()
            )
        );
    }

    #[test]
    fn url_twiml_and_every_option_are_carried() {
        let r = request(json!({"to": "+14155550100", "from": "+14155550199", "url": "https://example.com/alert.xml",
            "status_callback": "https://example.com/status", "status_callback_events": ["initiated", "completed"],
            "timeout": 30, "machine_detection": "DetectMessageEnd", "record": true, "time_limit": 300,
            "caller_id": "+14155550199", "send_digits": "1w2#"}))
        .unwrap();
        assert_eq!(r.from.as_str(), "+14155550199");
        assert_eq!(
            r.instructions,
            Instructions::Url("https://example.com/alert.xml".into())
        );
        assert_eq!(
            r.options.status_callback_events,
            [
                StatusCallbackEvent::Initiated,
                StatusCallbackEvent::Completed
            ]
        );
        assert_eq!(
            r.options.machine_detection,
            Some(MachineDetection::DetectMessageEnd)
        );
        let r =
            request(json!({"to": "+14155550100", "twiml": "<Response><Say>Hi</Say></Response>"}))
                .unwrap();
        assert_eq!(
            r.instructions,
            Instructions::Twiml("<Response><Say>Hi</Say></Response>".into())
        );
    }

    #[test]
    fn bad_events_are_refused_with_a_reason() {
        let cases = [
            (json!({"to": "+819012345678"}), "exactly one"),
            (
                json!({"to": "+819012345678", "url": "https://e.com", "say": "hi"}),
                "exactly one",
            ),
            (
                json!({"to": "+819012345678", "say": "hi", "extra": 1}),
                "unknown field",
            ),
            (json!({"to": 819012345678_u64, "say": "hi"}), "invalid type"),
            (json!({"to": "＋819012345678", "say": "hi"}), "E.164"),
            (
                json!({"to": "+449012345678", "say": "hi"}),
                "allowed prefixes",
            ),
            (
                json!({"to": "+819012345678", "from": "client:alice", "say": "hi"}),
                "from",
            ),
            (json!({"to": "+819012345678", "say": " "}), "empty"),
            (
                json!({"to": "+819012345678", "url": "http://e.com/x"}),
                "https",
            ),
            (
                json!({"to": "+819012345678", "twiml": "x".repeat(4001)}),
                "4000",
            ),
            (
                json!({"to": "+819012345678", "say": "hi", "status_callback_events": ["answered,completed"]}),
                "unknown variant",
            ),
        ];
        for (event, reason) in cases {
            let err = request(event.clone()).unwrap_err().to_string();
            assert!(err.contains(reason), "{event}: {err}");
        }
        let no_from = CallEvent::from_value(json!({"to": "+819012345678", "say": "hi"}))
            .unwrap()
            .into_request(None, &allow());
        assert_eq!(no_from.unwrap_err(), EventError::NoFrom);
    }

    #[test]
    fn long_japanese_say_is_measured_in_characters() {
        // 3,900 characters of Japanese fit; the rendered TwiML adds the document around them.
        let ok = request(json!({"to": "+819012345678", "say": "あ".repeat(3_900)}));
        assert!(ok.is_ok());
        let too_long =
            request(json!({"to": "+819012345678", "say": "あ".repeat(4_000)})).unwrap_err();
        assert!(matches!(
            too_long,
            EventError::Call(InvalidCall::TwimlTooLong(_))
        ));
    }
}
