//! Dependency injection by type, and by name where a contract asks for one.
//!
//! There are no global singletons: a process (or a test) builds its own `Container`,
//! registers the services it wants nodes to use, and hands it to each generated
//! `Node::new(&container)`. Services are shared as `Arc<T>`; `T` may be a trait object
//! (`dyn EventPublisher`), so tests can register doubles for protocols.

use std::any::{Any, TypeId, type_name};
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{ErrorCode, OnexError};
use crate::health::HealthProbe;

type Entry = (&'static str, Box<dyn Any + Send + Sync>);

/// A registry of shared services.
#[derive(Default)]
pub struct Container {
    by_type: HashMap<TypeId, Entry>,
    by_name: BTreeMap<String, Entry>,
    probes: Vec<Arc<dyn HealthProbe>>,
}

impl Container {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `service` as the `T` of this container, replacing an earlier one.
    pub fn register<T: ?Sized + Send + Sync + 'static>(&mut self, service: Arc<T>) -> &mut Self {
        self.by_type.insert(TypeId::of::<T>(), (type_name::<T>(), Box::new(service)));
        self
    }

    /// Registers `service` under `name` (for contracts that name a service rather than a type).
    pub fn register_named<T: ?Sized + Send + Sync + 'static>(
        &mut self,
        name: impl Into<String>,
        service: Arc<T>,
    ) -> &mut Self {
        self.by_name.insert(name.into(), (type_name::<T>(), Box::new(service)));
        self
    }

    /// The registered `T`, or a `REGISTRY_RESOLUTION_FAILED` error listing what is registered.
    pub fn resolve<T: ?Sized + Send + Sync + 'static>(&self) -> Result<Arc<T>, OnexError> {
        self.try_resolve::<T>().ok_or_else(|| self.missing(type_name::<T>()))
    }

    /// The registered `T`, if any.
    pub fn try_resolve<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.by_type.get(&TypeId::of::<T>()).and_then(|(_, any)| any.downcast_ref::<Arc<T>>()).cloned()
    }

    /// The service registered under `name` with type `T`.
    pub fn resolve_named<T: ?Sized + Send + Sync + 'static>(&self, name: &str) -> Result<Arc<T>, OnexError> {
        match self.by_name.get(name) {
            Some((_, any)) => any.downcast_ref::<Arc<T>>().cloned().ok_or_else(|| {
                OnexError::new(
                    ErrorCode::RegistryResolutionFailed,
                    format!("service '{name}' is registered, but not as {}", type_name::<T>()),
                )
            }),
            None => Err(self.missing(&format!("'{name}'"))),
        }
    }

    /// Adds a health probe of the user's own; the health checker built from this container
    /// runs it beside the probes of the services it finds.
    pub fn register_probe(&mut self, probe: Arc<dyn HealthProbe>) -> &mut Self {
        self.probes.push(probe);
        self
    }

    /// The probes registered with [`Container::register_probe`], in registration order.
    pub fn probes(&self) -> &[Arc<dyn HealthProbe>] {
        &self.probes
    }

    /// Type names and service names registered, sorted.
    pub fn registered(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_type.values().map(|(n, _)| (*n).to_owned()).collect();
        names.extend(self.by_name.iter().map(|(name, (ty, _))| format!("'{name}': {ty}")));
        names.sort();
        names
    }

    fn missing(&self, wanted: &str) -> OnexError {
        let registered = self.registered();
        let listed = if registered.is_empty() { "nothing".to_owned() } else { registered.join(", ") };
        OnexError::new(
            ErrorCode::RegistryResolutionFailed,
            format!("no service {wanted} in the container; registered: {listed}"),
        )
        .with_detail("wanted", wanted)
    }
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("registered", &self.registered()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Greeter: Send + Sync {
        fn greet(&self) -> String;
    }
    struct English;
    impl Greeter for English {
        fn greet(&self) -> String {
            "hello".into()
        }
    }

    #[test]
    fn resolves_concrete_and_trait_object_types() {
        let mut c = Container::new();
        c.register(Arc::new(42_u32));
        c.register::<dyn Greeter>(Arc::new(English));
        assert_eq!(*c.resolve::<u32>().unwrap(), 42);
        assert_eq!(c.resolve::<dyn Greeter>().unwrap().greet(), "hello");
    }

    #[test]
    fn missing_service_lists_what_is_registered() {
        let mut c = Container::new();
        c.register(Arc::new(1_u8));
        c.register_named("db", Arc::new(String::from("x")));
        let err = c.resolve::<u64>().unwrap_err();
        assert_eq!(err.code(), ErrorCode::RegistryResolutionFailed);
        assert!(err.message().contains("u64"), "{err}");
        assert!(err.message().contains("u8"), "{err}");
        assert!(err.message().contains("'db'"), "{err}");
        assert!(c.resolve_named::<u8>("db").is_err());
        assert_eq!(*c.resolve_named::<String>("db").unwrap(), "x");
    }
}
