//! Rules for names that end up in keys, URLs and namespaces: app names, tenant ids,
//! pools and HTTP routes, defined once in `stratus-proto` for the control plane and
//! workers alike.

pub use stratus_proto::names::{
    NameError, check_app_name, check_pool, check_tenant, normalize_route, routes_overlap,
};
