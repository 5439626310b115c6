//! The structured record of one anomaly (or, with `forward = "all"`, of one
//! transition): what the outbox holds and the SIEM formats render (SPEC
//! section 6). Formatting happens only when sending, so a relay can re-format.

use serde::{Deserialize, Serialize};

use crate::config::Severity;
use crate::event::{ActorType, TimeMs};

/// The rules of SPEC section 5.
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
}

impl RuleId {
    pub const ALL: [RuleId; 10] = [
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
        }
    }

    pub fn default_severity(self) -> Severity {
        match self {
            Self::GateBypass | Self::UnauthorizedActor => Severity::Critical,
            Self::IdReuse | Self::ChangeFreeze => Severity::Error,
            Self::InvalidTransition | Self::StatusConflict | Self::Stuck => Severity::Warning,
            Self::EmergencyChange | Self::Flapping | Self::ClockSkew => Severity::Notice,
        }
    }
}

/// One SIEM event, structured. Field names are SPEC section 6's.
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
    pub host: String,
    pub message: String,
}
