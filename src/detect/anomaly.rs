//! The structured record of one anomaly (or, with `forward = "all"`, of one
//! transition): what the outbox holds and the SIEM formats render
//! (docs/events.md). Formatting happens only when sending, so a relay can re-format.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::config::Severity;
use crate::event::{ActorType, ChangeClass, TimeMs};

/// The rules of docs/events.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleId {
    InvalidTransition,
    GateBypass,
    EmergencyChange,
    UnauthorizedActor,
    StatusConflict,
    Flapping,
    IdReuse,
    Stuck,
    ChangeFreeze,
    ClockSkew,
    SkippedStage,
}

impl RuleId {
    pub const ALL: [RuleId; 11] = [
        RuleId::InvalidTransition,
        RuleId::GateBypass,
        RuleId::EmergencyChange,
        RuleId::UnauthorizedActor,
        RuleId::StatusConflict,
        RuleId::Flapping,
        RuleId::IdReuse,
        RuleId::Stuck,
        RuleId::ChangeFreeze,
        RuleId::ClockSkew,
        RuleId::SkippedStage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidTransition => "invalid_transition",
            Self::GateBypass => "gate_bypass",
            Self::EmergencyChange => "emergency_change",
            Self::UnauthorizedActor => "unauthorized_actor",
            Self::StatusConflict => "status_conflict",
            Self::Flapping => "flapping",
            Self::IdReuse => "id_reuse",
            Self::Stuck => "stuck",
            Self::ChangeFreeze => "change_freeze",
            Self::ClockSkew => "clock_skew",
            Self::SkippedStage => "skipped_stage",
        }
    }

    pub fn default_severity(self) -> Severity {
        match self {
            Self::GateBypass | Self::UnauthorizedActor => Severity::Critical,
            Self::IdReuse | Self::ChangeFreeze => Severity::Error,
            Self::InvalidTransition | Self::StatusConflict | Self::Stuck | Self::SkippedStage => {
                Severity::Warning
            }
            Self::EmergencyChange | Self::Flapping | Self::ClockSkew => Severity::Notice,
        }
    }
}

/// One SIEM event, structured. Field names are docs/events.md's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub rule: String,
    pub severity: Severity,
    pub release: String,
    pub service: String,
    pub environment: String,
    pub site: String,
    #[serde(default)]
    pub from: Option<String>,
    pub to: String,
    pub actor: String,
    pub actor_type: ActorType,
    pub source: String,
    pub event_id: String,
    pub event_time: TimeMs,
    pub detected_at: TimeMs,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// The event's commit (transition records and rules about one event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The event's change class, so a relay judges the emergency path too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_class: Option<ChangeClass>,
    /// gate_bypass and emergency_change: who gave the decision the finding
    /// turns on (a rejection, a revocation, a self-approval, an approval
    /// that came too late), and that decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// `anchor` records: the audit chain's head, its sequence and hash
    /// (hex), when the record was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_hash: Option<String>,
    pub host: String,
    pub message: String,
}

/// An [`Anomaly`] borrowed rather than owned: decoded from an outbox record
/// in place (a string without JSON escapes is not copied), or viewed from an
/// [`Anomaly`]. The forwarder decodes every record it sends into one of
/// these: allocating and freeing the ~15 strings of an owned record per
/// event was a third of its time (BENCHMARKS.md, issue 10).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AnomalyRef<'a> {
    #[serde(borrow)]
    pub rule: Cow<'a, str>,
    pub severity: Severity,
    #[serde(borrow)]
    pub release: Cow<'a, str>,
    #[serde(borrow)]
    pub service: Cow<'a, str>,
    #[serde(borrow)]
    pub environment: Cow<'a, str>,
    #[serde(borrow)]
    pub site: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub from: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub to: Cow<'a, str>,
    #[serde(borrow)]
    pub actor: Cow<'a, str>,
    pub actor_type: ActorType,
    #[serde(borrow)]
    pub source: Cow<'a, str>,
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    pub event_time: TimeMs,
    pub detected_at: TimeMs,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub reason: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub version: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub commit: Option<Cow<'a, str>>,
    #[serde(default)]
    pub change_class: Option<ChangeClass>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub approver: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub decision: Option<Cow<'a, str>>,
    #[serde(default)]
    pub audit_sequence: Option<u64>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub audit_hash: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub host: Cow<'a, str>,
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

/// `Option<Cow<str>>` that borrows too (serde's own impl always copies).
fn opt_cow<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct B<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<B<'a>>::deserialize(d)?.map(|b| b.0))
}

impl<'a> From<&'a Anomaly> for AnomalyRef<'a> {
    fn from(a: &'a Anomaly) -> Self {
        let b = |s: &'a String| Cow::Borrowed(s.as_str());
        AnomalyRef {
            rule: b(&a.rule),
            severity: a.severity,
            release: b(&a.release),
            service: b(&a.service),
            environment: b(&a.environment),
            site: b(&a.site),
            from: a.from.as_ref().map(b),
            to: b(&a.to),
            actor: b(&a.actor),
            actor_type: a.actor_type,
            source: b(&a.source),
            event_id: b(&a.event_id),
            event_time: a.event_time,
            detected_at: a.detected_at,
            reason: a.reason.as_ref().map(b),
            version: a.version.as_ref().map(b),
            commit: a.commit.as_ref().map(b),
            change_class: a.change_class,
            approver: a.approver.as_ref().map(b),
            decision: a.decision.as_ref().map(b),
            audit_sequence: a.audit_sequence,
            audit_hash: a.audit_hash.as_ref().map(b),
            host: b(&a.host),
            message: b(&a.message),
        }
    }
}

#[cfg(test)]
mod ref_tests {
    use super::*;

    fn sample(escapes: bool) -> Anomaly {
        let x = if escapes { "\"\\\n\u{e9}" } else { "" };
        Anomaly {
            rule: format!("invalid_transition{x}"),
            severity: Severity::Warning,
            release: format!("r-1{x}"),
            service: "payments".into(),
            environment: format!("prod{x}"),
            site: "z\u{fc}rich".into(),
            from: Some(format!("complete{x}")),
            to: "deployed".into(),
            actor: format!("jo{x}"),
            actor_type: ActorType::Human,
            source: "deploy-log".into(),
            event_id: "e-1".into(),
            event_time: 1_790_000_000_000,
            detected_at: 1_790_000_001_500,
            reason: Some(format!("a|b{x}")),
            version: escapes.then(|| "1.2".to_string()),
            commit: escapes.then(|| format!("abc{x}")),
            change_class: escapes.then_some(ChangeClass::Emergency),
            approver: None,
            decision: None,
            audit_sequence: None,
            audit_hash: None,
            host: "web-1".into(),
            message: format!("complete -> deployed{x}"),
        }
    }

    /// Decoding an outbox record borrowed gives the same fields as decoding
    /// it owned (with and without escapes, absent and present options).
    #[test]
    fn borrowed_decode_agrees_with_owned() {
        for escapes in [false, true] {
            let a = sample(escapes);
            let json = serde_json::to_vec(&a).unwrap();
            let r: AnomalyRef<'_> = serde_json::from_slice(&json).unwrap();
            assert_eq!(r, AnomalyRef::from(&a));
            if !escapes {
                assert!(matches!(r.release, Cow::Borrowed(_)));
                assert!(matches!(r.from, Some(Cow::Borrowed(_))));
            }
        }
        // Optional fields left out entirely (older records).
        let r: AnomalyRef<'_> = serde_json::from_str(
            r#"{"rule":"x","severity":"info","release":"r","service":"s","environment":"e","site":"","to":"t","actor":"a","actor_type":"human","source":"f","event_id":"i","event_time":1,"detected_at":2,"host":"h","message":"m"}"#,
        )
        .unwrap();
        assert_eq!((r.from, r.reason, r.version), (None, None, None));
    }
}
