//! A service's health is the worst status among its instances' checks, node checks
//! included: an instance on a failing node does not serve.

use std::collections::BTreeMap;

use super::types::{CheckStatus, ServiceEntry};
use crate::models::consul::ConsulServiceHealth;
use crate::models::health::HealthStatus;

impl CheckStatus {
    /// Passing is healthy, warning degraded, critical (and unknown) unhealthy.
    pub fn health_status(self) -> HealthStatus {
        match self {
            Self::Passing => HealthStatus::Healthy,
            Self::Warning => HealthStatus::Degraded,
            Self::Critical | Self::Unknown => HealthStatus::Unhealthy,
        }
    }
}

/// The worst status of `checks`; passing when there are none (Consul reports an instance
/// without checks as passing).
pub fn worst_status<'a>(checks: impl IntoIterator<Item = &'a CheckStatus>) -> CheckStatus {
    checks.into_iter().copied().max_by_key(|status| status.severity()).unwrap_or(CheckStatus::Passing)
}

/// One health per service named in `entries` (the answers of `/v1/health/service/:name`,
/// any number of services mixed), sorted by service name: its instance count and the worst
/// status over every check of every instance.
pub fn service_health(entries: &[ServiceEntry]) -> Vec<ConsulServiceHealth> {
    let mut by_service: BTreeMap<&str, (u32, CheckStatus)> = BTreeMap::new();
    for entry in entries {
        let worst = worst_status(entry.checks.iter().map(|check| &check.status));
        let slot = by_service.entry(entry.service.service.as_str()).or_insert((0, CheckStatus::Passing));
        slot.0 += 1;
        slot.1 = worst_status([&slot.1, &worst]);
    }
    by_service
        .into_iter()
        .map(|(service, (instances, status))| ConsulServiceHealth {
            service: service.to_owned(),
            status: status.health_status(),
            instances,
        })
        .collect()
}

/// The worst of the services' statuses; healthy when there are none.
pub fn overall_health(services: &[ConsulServiceHealth]) -> HealthStatus {
    services.iter().fold(HealthStatus::Healthy, |worst, service| worst.worst(service.status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::types::{AgentService, CatalogNode, HealthCheck};

    fn entry(service: &str, statuses: &[CheckStatus]) -> ServiceEntry {
        ServiceEntry {
            node: CatalogNode::new("node-1", "10.0.0.1", "dc1"),
            service: AgentService::new(format!("{service}-1"), service, 80),
            checks: statuses
                .iter()
                .enumerate()
                .map(|(i, status)| HealthCheck {
                    node: "node-1".into(),
                    check_id: format!("check-{i}"),
                    name: String::new(),
                    status: *status,
                    output: String::new(),
                    service_id: format!("{service}-1"),
                    service_name: service.into(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_service_is_as_healthy_as_its_worst_check_on_any_instance() {
        use CheckStatus::*;
        let entries =
            [entry("web", &[Passing, Passing]), entry("web", &[Passing, Warning]), entry("db", &[Passing, Critical])];
        let health = service_health(&entries);
        assert_eq!(
            health,
            vec![
                ConsulServiceHealth { service: "db".into(), status: HealthStatus::Unhealthy, instances: 1 },
                ConsulServiceHealth { service: "web".into(), status: HealthStatus::Degraded, instances: 2 },
            ]
        );
        assert_eq!(overall_health(&health), HealthStatus::Unhealthy);
    }

    #[test]
    fn an_instance_without_checks_is_passing_and_no_services_are_healthy() {
        assert_eq!(service_health(&[entry("web", &[])])[0].status, HealthStatus::Healthy);
        assert_eq!(overall_health(&[]), HealthStatus::Healthy);
    }
}
