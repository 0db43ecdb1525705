//! The access model Harness users know, as pure data and one decision function: permissions per resource
//! type, built-in and custom roles, resource groups (all resources of a scope, optionally with its child
//! scopes, or a named list), and role bindings (principal + role + resource group at a scope). A principal may
//! do something to a resource when one of its bindings sits at a scope that contains the resource, its role
//! holds the permission and its resource group includes the resource.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every permission, `resource_type:action`.
pub const PERMISSIONS: &[&str] = &[
    "org:view",
    "org:create_edit",
    "org:delete",
    "project:view",
    "project:create_edit",
    "project:delete",
    "pipeline:view",
    "pipeline:create_edit",
    "pipeline:delete",
    "pipeline:execute",
    "execution:view",
    "execution:abort",
    "input_set:view",
    "input_set:create_edit",
    "input_set:delete",
    "service:view",
    "service:create_edit",
    "service:delete",
    "service:access",
    "environment:view",
    "environment:create_edit",
    "environment:delete",
    "environment:access",
    "secret:view",
    "secret:create_edit",
    "secret:delete",
    "secret:access",
    "template:view",
    "template:create_edit",
    "template:delete",
    "user:manage",
    "role:manage",
    "audit:view",
    "agent:view",
    "agent:manage",
];

/// A permission the server checks: one of [`PERMISSIONS`], never a string made up at a call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission(&'static str);

impl Permission {
    /// `org:view`.
    pub const ORG_VIEW: Permission = Permission("org:view");
    /// `org:create_edit`.
    pub const ORG_CREATE_EDIT: Permission = Permission("org:create_edit");
    /// `org:delete`.
    pub const ORG_DELETE: Permission = Permission("org:delete");
    /// `project:view`.
    pub const PROJECT_VIEW: Permission = Permission("project:view");
    /// `project:create_edit`.
    pub const PROJECT_CREATE_EDIT: Permission = Permission("project:create_edit");
    /// `project:delete`.
    pub const PROJECT_DELETE: Permission = Permission("project:delete");
    /// `pipeline:view`.
    pub const PIPELINE_VIEW: Permission = Permission("pipeline:view");
    /// `pipeline:create_edit`.
    pub const PIPELINE_CREATE_EDIT: Permission = Permission("pipeline:create_edit");
    /// `pipeline:delete`.
    pub const PIPELINE_DELETE: Permission = Permission("pipeline:delete");
    /// `pipeline:execute`.
    pub const PIPELINE_EXECUTE: Permission = Permission("pipeline:execute");
    /// `execution:view`.
    pub const EXECUTION_VIEW: Permission = Permission("execution:view");
    /// `execution:abort`.
    pub const EXECUTION_ABORT: Permission = Permission("execution:abort");
    /// `input_set:view`.
    pub const INPUT_SET_VIEW: Permission = Permission("input_set:view");
    /// `input_set:create_edit`.
    pub const INPUT_SET_CREATE_EDIT: Permission = Permission("input_set:create_edit");
    /// `input_set:delete`.
    pub const INPUT_SET_DELETE: Permission = Permission("input_set:delete");
    /// `service:view`.
    pub const SERVICE_VIEW: Permission = Permission("service:view");
    /// `service:create_edit`.
    pub const SERVICE_CREATE_EDIT: Permission = Permission("service:create_edit");
    /// `service:delete`.
    pub const SERVICE_DELETE: Permission = Permission("service:delete");
    /// `service:access`.
    pub const SERVICE_ACCESS: Permission = Permission("service:access");
    /// `environment:view`.
    pub const ENVIRONMENT_VIEW: Permission = Permission("environment:view");
    /// `environment:create_edit`.
    pub const ENVIRONMENT_CREATE_EDIT: Permission = Permission("environment:create_edit");
    /// `environment:delete`.
    pub const ENVIRONMENT_DELETE: Permission = Permission("environment:delete");
    /// `environment:access`.
    pub const ENVIRONMENT_ACCESS: Permission = Permission("environment:access");
    /// `secret:view`.
    pub const SECRET_VIEW: Permission = Permission("secret:view");
    /// `secret:create_edit`.
    pub const SECRET_CREATE_EDIT: Permission = Permission("secret:create_edit");
    /// `secret:delete`.
    pub const SECRET_DELETE: Permission = Permission("secret:delete");
    /// `secret:access`.
    pub const SECRET_ACCESS: Permission = Permission("secret:access");
    /// `template:view`.
    pub const TEMPLATE_VIEW: Permission = Permission("template:view");
    /// `template:create_edit`.
    pub const TEMPLATE_CREATE_EDIT: Permission = Permission("template:create_edit");
    /// `template:delete`.
    pub const TEMPLATE_DELETE: Permission = Permission("template:delete");
    /// `user:manage`.
    pub const USER_MANAGE: Permission = Permission("user:manage");
    /// `role:manage`.
    pub const ROLE_MANAGE: Permission = Permission("role:manage");
    /// `audit:view`.
    pub const AUDIT_VIEW: Permission = Permission("audit:view");
    /// `agent:view`.
    pub const AGENT_VIEW: Permission = Permission("agent:view");
    /// `agent:manage`.
    pub const AGENT_MANAGE: Permission = Permission("agent:manage");

    /// Its name, `resource_type:action`.
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The resource type it is about.
    pub fn rtype(self) -> &'static str {
        self.0.split(':').next().unwrap_or_default()
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A scope: the account (`org` and `project` empty), an organization, or a project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
pub struct Scope {
    /// Organization ('' for the account).
    #[serde(default)]
    pub org: String,
    /// Project ('' for the account or an organization).
    #[serde(default)]
    pub project: String,
}

impl Scope {
    /// The account.
    pub fn account() -> Scope {
        Scope::default()
    }

    /// An organization.
    pub fn org(org: &str) -> Scope {
        Scope { org: org.into(), project: String::new() }
    }

    /// A project.
    pub fn project(org: &str, project: &str) -> Scope {
        Scope { org: org.into(), project: project.into() }
    }

    /// Whether `other` is this scope or inside it.
    pub fn contains(&self, other: &Scope) -> bool {
        self.org.is_empty() || (self.org == other.org && (self.project.is_empty() || self.project == other.project))
    }

    /// `account`, `org/o`, `project o/p`.
    pub fn describe(&self) -> String {
        match (self.org.as_str(), self.project.as_str()) {
            ("", _) => "the account".into(),
            (o, "") => format!("organization `{o}`"),
            (o, p) => format!("project `{o}/{p}`"),
        }
    }
}

/// A role: a set of permissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Role {
    /// Identifier (built-in ones start with `_`).
    pub identifier: String,
    /// Display name.
    pub name: String,
    /// Permissions (`pipeline:execute`, …).
    pub permissions: Vec<String>,
}

/// The built-in roles (built once).
pub fn builtin_roles() -> &'static [Role] {
    static ROLES: std::sync::LazyLock<Vec<Role>> = std::sync::LazyLock::new(make_builtin_roles);
    &ROLES
}

fn make_builtin_roles() -> Vec<Role> {
    let all = || PERMISSIONS.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let role = |id: &str, name: &str, perms: Vec<String>| Role {
        identifier: id.into(),
        name: name.into(),
        permissions: perms,
    };
    vec![
        role("_account_admin", "Account Admin", all()),
        role(
            "_organization_admin",
            "Organization Admin",
            all().into_iter().filter(|p| p != "org:create_edit").collect(),
        ),
        role(
            "_project_admin",
            "Project Admin",
            all()
                .into_iter()
                // A project admin registers and manages the project's own agents (as Harness's project-level
                // delegates); its bindings never reach the account's or an organization's agents.
                .filter(|p| !p.starts_with("org:") && p != "audit:view")
                .chain(["org:view".into()])
                .collect(),
        ),
        role(
            "_project_viewer",
            "Project Viewer",
            all()
                .into_iter()
                .filter(|p| p.ends_with(":view") && p != "audit:view" && !p.starts_with("agent:"))
                .collect(),
        ),
        role(
            "_pipeline_executor",
            "Pipeline Executor",
            [
                "org:view",
                "project:view",
                "pipeline:view",
                "pipeline:execute",
                "execution:view",
                "execution:abort",
                "input_set:view",
                "service:view",
                "service:access",
                "environment:view",
                "environment:access",
                "secret:access",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ]
}

/// One entry of a resource group's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceFilter {
    /// Resource type (`pipeline`, `secret`, …).
    #[schema(schema_with = crate::contract::resource_type)]
    pub resource_type: String,
    /// Only these identifiers (none: every resource of the type).
    #[serde(default)]
    #[schema(schema_with = crate::contract::optional_identifier_list)]
    pub identifiers: Option<Vec<String>>,
}

/// A resource group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceGroup {
    /// Identifier (built-in ones start with `_`; new ones may not).
    #[schema(schema_with = crate::contract::custom_identifier)]
    pub identifier: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Include resources of the scopes below (an organization's projects).
    #[serde(default)]
    pub include_child_scopes: bool,
    /// Every resource (of the scope, and of child scopes when included).
    #[serde(default)]
    pub all_resources: bool,
    /// Otherwise, these.
    #[serde(default)]
    pub resources: Vec<ResourceFilter>,
}

/// The built-in resource groups (built once).
pub fn builtin_resource_groups() -> &'static [ResourceGroup] {
    static GROUPS: std::sync::LazyLock<Vec<ResourceGroup>> = std::sync::LazyLock::new(make_builtin_groups);
    &GROUPS
}

fn make_builtin_groups() -> Vec<ResourceGroup> {
    vec![
        ResourceGroup {
            identifier: "_all_resources_including_child_scopes".into(),
            name: "All Resources Including Child Scopes".into(),
            include_child_scopes: true,
            all_resources: true,
            resources: vec![],
        },
        ResourceGroup {
            identifier: "_all_project_level_resources".into(),
            name: "All Project Level Resources".into(),
            include_child_scopes: false,
            all_resources: true,
            resources: vec![],
        },
    ]
}

/// Who a binding is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrincipalRef {
    /// `user` or `service_account`.
    #[schema(schema_with = crate::contract::principal_kind_schema)]
    pub kind: String,
    /// User name or service account identifier.
    #[schema(schema_with = crate::contract::identifier)]
    pub id: String,
}

/// A role binding: principal + role + resource group at a scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Binding {
    /// Identifier.
    pub identifier: String,
    /// Where it applies.
    pub scope: Scope,
    /// Who.
    pub principal: PrincipalRef,
    /// Role identifier.
    pub role: String,
    /// Resource group identifier.
    pub resource_group: String,
}

/// A resource something is done to.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Its type as resource groups name it (`pipeline`, `secret`, `project`, …; executions are their pipeline's).
    pub rtype: String,
    /// Its identifier ('' for "any of the type", e.g. creating a new one).
    pub id: String,
    /// Where it lives (a project is its own scope).
    pub scope: Scope,
}

impl Resource {
    /// A resource of a type in a scope.
    pub fn new(rtype: &str, id: &str, scope: Scope) -> Resource {
        Resource { rtype: rtype.into(), id: id.into(), scope }
    }
}

/// The roles, resource groups and bindings in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Custom roles with the scope they are defined at.
    pub roles: Vec<(Scope, Role)>,
    /// Custom resource groups with their scope.
    pub groups: Vec<(Scope, ResourceGroup)>,
    /// Every binding.
    pub bindings: Vec<Binding>,
}

impl Policy {
    /// The role a binding at `scope` names: built-in, or custom at that scope or above.
    pub fn role(&self, scope: &Scope, id: &str) -> Option<&Role> {
        if let Some(r) = builtin_roles().iter().find(|r| r.identifier == id) {
            return Some(r);
        }
        self.roles.iter().find(|(s, r)| r.identifier == id && s.contains(scope)).map(|(_, r)| r)
    }

    /// The resource group a binding at `scope` names.
    pub fn group(&self, scope: &Scope, id: &str) -> Option<&ResourceGroup> {
        if let Some(g) = builtin_resource_groups().iter().find(|g| g.identifier == id) {
            return Some(g);
        }
        self.groups.iter().find(|(s, g)| g.identifier == id && s == scope).map(|(_, g)| g)
    }

    /// Whether the principal may do `permission` to `resource`.
    pub fn allows(&self, principal: &PrincipalRef, permission: Permission, resource: &Resource) -> bool {
        self.bindings.iter().filter(|b| &b.principal == principal).any(|b| {
            b.scope.contains(&resource.scope)
                && self.role(&b.scope, &b.role).is_some_and(|r| r.permissions.iter().any(|p| p == permission.as_str()))
                && self.group(&b.scope, &b.resource_group).is_some_and(|g| group_includes(g, &b.scope, resource))
        })
    }

    /// Whether the principal may do `permission` to at least some resource of `rtype` in `scope` (checked before
    /// the request body names which one).
    pub fn allows_some(&self, principal: &PrincipalRef, permission: Permission, rtype: &str, scope: &Scope) -> bool {
        self.bindings.iter().filter(|b| &b.principal == principal).any(|b| {
            b.scope.contains(scope)
                && self.role(&b.scope, &b.role).is_some_and(|r| r.permissions.iter().any(|p| p == permission.as_str()))
                && self.group(&b.scope, &b.resource_group).is_some_and(|g| {
                    (b.scope == *scope || g.include_child_scopes)
                        && (g.all_resources || g.resources.iter().any(|f| f.resource_type == rtype))
                })
        })
    }

    /// Whether the principal holds any permission anywhere in (or above) `scope`: it may know the scope exists.
    pub fn sees_scope(&self, principal: &PrincipalRef, scope: &Scope) -> bool {
        let (kind, id, view) = if scope.project.is_empty() {
            ("org", &scope.org, Permission::ORG_VIEW)
        } else {
            ("project", &scope.project, Permission::PROJECT_VIEW)
        };
        scope.org.is_empty() || self.allows(principal, view, &Resource::new(kind, id, scope.clone()))
    }
}

fn group_includes(g: &ResourceGroup, at: &Scope, r: &Resource) -> bool {
    let same_scope = *at == r.scope;
    if !same_scope && !g.include_child_scopes {
        return false;
    }
    g.all_resources
        || g.resources.iter().any(|f| {
            f.resource_type == r.rtype
                && f.identifiers.as_ref().is_none_or(|ids| !r.id.is_empty() && ids.contains(&r.id))
        })
}

/// Check a custom role's permissions; the first unknown one is the error.
pub fn check_permissions(perms: &[String]) -> Result<(), String> {
    match perms.iter().find(|p| !PERMISSIONS.contains(&p.as_str())) {
        Some(p) => Err(format!("unknown permission `{p}`; known: {}", PERMISSIONS.join(", "))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {

    /// The permission `action` on resources of type `rtype`, if there is one.
    fn of(rtype: &str, action: &str) -> Option<Permission> {
        [
            Permission::ORG_VIEW,
            Permission::ORG_CREATE_EDIT,
            Permission::ORG_DELETE,
            Permission::PROJECT_VIEW,
            Permission::PROJECT_CREATE_EDIT,
            Permission::PROJECT_DELETE,
            Permission::PIPELINE_VIEW,
            Permission::PIPELINE_CREATE_EDIT,
            Permission::PIPELINE_DELETE,
            Permission::PIPELINE_EXECUTE,
            Permission::EXECUTION_VIEW,
            Permission::EXECUTION_ABORT,
            Permission::INPUT_SET_VIEW,
            Permission::INPUT_SET_CREATE_EDIT,
            Permission::INPUT_SET_DELETE,
            Permission::SERVICE_VIEW,
            Permission::SERVICE_CREATE_EDIT,
            Permission::SERVICE_DELETE,
            Permission::SERVICE_ACCESS,
            Permission::ENVIRONMENT_VIEW,
            Permission::ENVIRONMENT_CREATE_EDIT,
            Permission::ENVIRONMENT_DELETE,
            Permission::ENVIRONMENT_ACCESS,
            Permission::SECRET_VIEW,
            Permission::SECRET_CREATE_EDIT,
            Permission::SECRET_DELETE,
            Permission::SECRET_ACCESS,
            Permission::TEMPLATE_VIEW,
            Permission::TEMPLATE_CREATE_EDIT,
            Permission::TEMPLATE_DELETE,
            Permission::USER_MANAGE,
            Permission::ROLE_MANAGE,
            Permission::AUDIT_VIEW,
            Permission::AGENT_VIEW,
            Permission::AGENT_MANAGE,
        ]
        .into_iter()
        .find(|p| p.as_str().split_once(':') == Some((rtype, action)))
    }

    #[test]
    fn permissions_are_only_the_known_ones() {
        let cases = [
            ("pipeline", "execute", Some(Permission::PIPELINE_EXECUTE)),
            ("environment", "access", Some(Permission::ENVIRONMENT_ACCESS)),
            ("agent", "manage", Some(Permission::AGENT_MANAGE)),
            ("pipeline", "launch", None),
            ("infrastructure", "view", None),
        ];
        for (rtype, action, want) in cases {
            assert_eq!(of(rtype, action), want, "{rtype}:{action}");
        }
        for name in PERMISSIONS {
            let (rtype, action) = name.split_once(':').unwrap();
            let p = of(rtype, action).unwrap_or_else(|| panic!("no constant for {name}"));
            assert_eq!((p.as_str(), p.rtype()), (*name, rtype));
        }
    }
    use super::*;

    fn user(id: &str) -> PrincipalRef {
        PrincipalRef { kind: "user".into(), id: id.into() }
    }

    fn bind(p: &str, role: &str, group: &str, scope: Scope) -> Binding {
        Binding {
            identifier: format!("{p}-{role}"),
            scope,
            principal: user(p),
            role: role.into(),
            resource_group: group.into(),
        }
    }

    #[test]
    fn executor_can_execute_but_not_edit_and_only_in_its_project() {
        let policy = Policy {
            bindings: vec![bind(
                "ex",
                "_pipeline_executor",
                "_all_project_level_resources",
                Scope::project("default", "default"),
            )],
            ..Policy::default()
        };
        let here = Resource::new("pipeline", "deploy", Scope::project("default", "default"));
        let there = Resource::new("pipeline", "deploy", Scope::project("default", "other"));
        assert!(policy.allows(&user("ex"), Permission::PIPELINE_EXECUTE, &here));
        assert!(!policy.allows(&user("ex"), Permission::PIPELINE_CREATE_EDIT, &here));
        assert!(!policy.allows(&user("ex"), Permission::PIPELINE_EXECUTE, &there));
        assert!(!policy.allows(&user("other"), Permission::PIPELINE_VIEW, &here));
        assert!(policy.sees_scope(&user("ex"), &Scope::project("default", "default")));
        assert!(!policy.sees_scope(&user("ex"), &Scope::project("default", "other")));
    }

    #[test]
    fn named_resource_group_limits_to_listed_pipelines() {
        let scope = Scope::project("o", "p");
        let policy = Policy {
            groups: vec![(
                scope.clone(),
                ResourceGroup {
                    identifier: "prod_only".into(),
                    name: "prod".into(),
                    include_child_scopes: false,
                    all_resources: false,
                    resources: vec![ResourceFilter {
                        resource_type: "pipeline".into(),
                        identifiers: Some(vec!["deploy_prod".into()]),
                    }],
                },
            )],
            bindings: vec![bind("u", "_pipeline_executor", "prod_only", scope.clone())],
            ..Policy::default()
        };
        assert!(policy.allows(
            &user("u"),
            Permission::PIPELINE_EXECUTE,
            &Resource::new("pipeline", "deploy_prod", scope.clone())
        ));
        assert!(!policy.allows(
            &user("u"),
            Permission::PIPELINE_EXECUTE,
            &Resource::new("pipeline", "build", scope.clone())
        ));
        assert!(!policy.allows(&user("u"), Permission::PIPELINE_EXECUTE, &Resource::new("pipeline", "", scope)));
    }

    #[test]
    fn account_admin_everywhere_org_binding_needs_child_scopes() {
        let policy = Policy {
            bindings: vec![
                bind("admin", "_account_admin", "_all_resources_including_child_scopes", Scope::account()),
                bind("orgv", "_project_viewer", "_all_project_level_resources", Scope::org("o")),
            ],
            ..Policy::default()
        };
        let r = Resource::new("secret", "x", Scope::project("o", "p"));
        assert!(policy.allows(&user("admin"), Permission::SECRET_DELETE, &r));
        // A group without child scopes at the org does not reach into its projects.
        assert!(!policy.allows(&user("orgv"), Permission::SECRET_VIEW, &r));
        assert!(check_permissions(&["pipeline:launch".into()]).is_err());
    }
}
