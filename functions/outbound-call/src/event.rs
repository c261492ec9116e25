//! The call event: the same JSON for a direct invoke, a schedule's input and the HTTP API's body.
//! It is checked whole before anything is sent: here its shape (types, unknown fields, E.164
//! numbers, exactly one of `twiml` / `url` / `say`, the `say` rules), then by
//! [`CallSpec::validate`] the allow-list, what inline TwiML can reach, URL prefixes and Twilio's
//! limits.

use serde::Deserialize;
use twilio_voice::calls::{
    CallOptions, CallPolicy, CallRequest, CallSpec, Instructions, InvalidCall, MachineDetection,
    StatusCallbackEvent,
};
use twilio_voice::limits::LOOP_COUNT;
use twilio_voice::phone::{PhoneError, PhoneNumber, mask_digits};
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
    /// Identifies this request across its deliveries (see `delivery`): a second delivery with
    /// the same key never dials again.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// RFC 3339: a delivery later than this places no call (`NonRetryable.Expired`).
    #[serde(default)]
    pub not_after: Option<String>,
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
    #[error("say.loop must be between 1 and 10 (0 is Twilio's \"forever\")")]
    SayLoop,
    #[error(transparent)]
    Call(#[from] InvalidCall),
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
    #[error(transparent)]
    Alert(#[from] twilio_voice::alerts::AlertError),
}

impl EventError {
    /// A parse error, its phone numbers masked: serde repeats the values it refuses
    /// ("invalid type: integer `819012345678`"), and the message reaches logs and HTTP bodies.
    pub fn json(e: impl std::fmt::Display) -> Self {
        Self::Json(mask_digits(&e.to_string()))
    }
}

fn number(field: &'static str, raw: &str) -> Result<PhoneNumber, EventError> {
    PhoneNumber::parse(raw).map_err(|source| EventError::Number { field, source })
}

impl CallEvent {
    pub fn from_json(json: &[u8]) -> Result<Self, EventError> {
        serde_json::from_slice(json).map_err(EventError::json)
    }

    pub fn from_value(value: serde_json::Value) -> Result<Self, EventError> {
        serde_json::from_value(value).map_err(EventError::json)
    }

    /// The call the event asks for, its own rules checked; the policy's come next.
    pub fn into_spec(self, default_from: Option<&PhoneNumber>) -> Result<CallSpec, EventError> {
        let to = number("to", &self.to)?;
        let from = match &self.from {
            Some(raw) => number("from", raw)?,
            None => default_from.cloned().ok_or(EventError::NoFrom)?,
        };
        let instructions = match (self.twiml, self.url, self.say) {
            (Some(twiml), None, None) => Instructions::Twiml(twiml),
            (None, Some(url), None) => Instructions::Url(url),
            (None, None, Some(say)) => {
                if say.text().trim().is_empty() {
                    return Err(EventError::EmptySay);
                }
                let bad_loop = |n: u32| !LOOP_COUNT.contains(&n);
                if matches!(&say, Speech::Detailed(d) if d.loops.is_some_and(bad_loop)) {
                    return Err(EventError::SayLoop);
                }
                Instructions::Twiml(VoiceResponse::new().say(say.to_say(None, None)).to_xml())
            }
            _ => return Err(EventError::Instructions),
        };
        let caller_id = self
            .caller_id
            .as_deref()
            .map(|raw| number("caller_id", raw))
            .transpose()?;
        Ok(CallSpec {
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
                caller_id,
                send_digits: self.send_digits,
            },
        })
    }

    /// The request Twilio will get, or why there will be none.
    pub fn into_request(
        self,
        default_from: Option<&PhoneNumber>,
        policy: &CallPolicy,
    ) -> Result<CallRequest, EventError> {
        Ok(self.into_spec(default_from)?.validate(policy)?)
    }
}

#[cfg(test)]
mod tests {
    //! The event → request mapping. Bad events, one table for every way in, are in
    //! tests/bad_inputs.rs; bad call specs in twilio_voice::calls; bad TwiML in twiml::inspect.
    use super::*;
    use serde_json::json;
    use twilio_voice::phone::AllowList;
    use twilio_voice::twiml::inspect::{GatedElements, Policy, UrlPrefixes};

    fn policy() -> CallPolicy {
        CallPolicy {
            reach: Policy {
                destinations: AllowList::parse("+81,+1").unwrap(),
                urls: UrlPrefixes::parse("https://example.com/").unwrap(),
                gated: GatedElements::default(),
            },
            default_time_limit: 3600,
        }
    }

    fn from() -> PhoneNumber {
        "+15005550006".parse().unwrap()
    }

    fn request(value: serde_json::Value) -> Result<CallRequest, EventError> {
        CallEvent::from_value(value)?.into_request(Some(&from()), &policy())
    }

    #[test]
    fn japanese_say_becomes_inline_twiml() {
        let r = request(json!({"to": "+81312345678",
            "say": {"text": "サーバーが応答していません。", "language": "ja-JP", "voice": "Polly.Mizuki", "loop": 2}}))
        .unwrap();
        assert_eq!(r.from(), &from());
        assert_eq!(
            r.instructions(),
            &Instructions::Twiml(
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
        assert_eq!(r.from().as_str(), "+14155550199");
        assert_eq!(
            r.instructions(),
            &Instructions::Url("https://example.com/alert.xml".into())
        );
        let o = r.options();
        assert_eq!(
            o.status_callback_events,
            [
                StatusCallbackEvent::Initiated,
                StatusCallbackEvent::Completed
            ]
        );
        assert_eq!(
            o.machine_detection,
            Some(MachineDetection::DetectMessageEnd)
        );
        assert_eq!(
            (o.timeout, o.time_limit, o.record),
            (Some(30), Some(300), Some(true))
        );
        assert_eq!(
            o.caller_id.as_ref().map(PhoneNumber::as_str),
            Some("+14155550199")
        );
        assert_eq!(o.send_digits.as_deref(), Some("1w2#"));
        let r =
            request(json!({"to": "+14155550100", "twiml": "<Response><Say>Hi</Say></Response>"}))
                .unwrap();
        assert_eq!(
            r.instructions(),
            &Instructions::Twiml("<Response><Say>Hi</Say></Response>".into())
        );
        assert_eq!(r.options().time_limit, Some(3600), "the default TimeLimit");
    }

    #[test]
    fn without_a_default_caller_the_event_must_name_one() {
        let no_from = CallEvent::from_value(json!({"to": "+81312345678", "say": "hi"}))
            .unwrap()
            .into_request(None, &policy());
        assert_eq!(no_from.unwrap_err(), EventError::NoFrom);
    }
}
