//! The service layer: the use cases of the server as typed functions that take the caller and return typed
//! results or an [`crate::error::ApiError`], with RBAC checked inside them. Transports (the JSON API, the web
//! pages) are thin adapters over these functions.

pub mod executions;
pub mod pipelines;
pub mod scopes;
