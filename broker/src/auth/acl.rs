//! Access control lists, kept in the metadata group: a principal (or a role) may or may
//! not do an operation on a resource, named literally or by prefix. Deny wins over
//! allow; what no entry allows is refused; super users may do everything; internal
//! topics (`__…`) are for super users only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster itself (brokers, partition moves, ACLs).
    Cluster,
}

/// How an entry's name matches resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The very name (`*`: every resource of the type).
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

/// An operation on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Fetch from a topic; join a group or commit its offsets.
    Read,
    /// Produce to a topic.
    Write,
    /// Create a topic.
    Create,
    /// Delete a topic or a group.
    Delete,
    /// Change a topic's configs or partitions; cluster changes.
    Alter,
    /// See a topic, a group or the cluster (implied by every other operation).
    Describe,
    /// Every operation.
    All,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Allows the operation.
    Allow,
    /// Denies it, whatever allows it.
    Deny,
}

/// One access control entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    /// `User:<sub>` (`User:*`: everyone authenticated) or `Role:<role>`.
    pub principal: String,
    /// The resource type.
    pub resource_type: ResourceType,
    /// How `name` matches.
    pub pattern: PatternType,
    /// The resource name or prefix (empty for the cluster).
    pub name: String,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

/// Longest principal or resource name in an entry.
const MAX_NAME: usize = 255;

macro_rules! names {
    ($ty:ident { $($v:ident = $s:literal),* $(,)? }) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$v => $s),* })
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $($s => Ok(Self::$v),)*
                    _ => Err(format!(
                        concat!(stringify!($ty), " `{}` is not one of: ", $($s, " "),*),
                        crate::error::shown(s)
                    )),
                }
            }
        }
    };
}

names!(ResourceType { Topic = "topic", Group = "group", Cluster = "cluster" });
names!(PatternType { Literal = "literal", Prefixed = "prefixed" });
names!(Operation {
    Read = "read", Write = "write", Create = "create", Delete = "delete",
    Alter = "alter", Describe = "describe", All = "all",
});
names!(Permission { Allow = "allow", Deny = "deny" });

impl AclEntry {
    /// Checks the principal and name.
    pub fn validate(&self) -> Result<(), String> {
        let ok_principal = self
            .principal
            .strip_prefix("User:")
            .or_else(|| self.principal.strip_prefix("Role:"))
            .is_some_and(|n| !n.is_empty());
        if !ok_principal || self.principal.len() > MAX_NAME {
            return Err(format!(
                "principal `{}` is not `User:<name>` or `Role:<role>`",
                crate::error::shown(&self.principal)
            ));
        }
        if self.name.len() > MAX_NAME {
            return Err(format!("resource name over {MAX_NAME} bytes"));
        }
        match self.resource_type {
            ResourceType::Cluster if !self.name.is_empty() && self.name != "*" => {
                Err("a cluster entry names no resource".into())
            }
            ResourceType::Topic | ResourceType::Group if self.name.is_empty() => Err(format!(
                "a {} entry needs a name (`*` for all)",
                self.resource_type
            )),
            _ => Ok(()),
        }
    }

    fn covers_principal(&self, name: &str, roles: &[String]) -> bool {
        match self.principal.split_once(':') {
            Some(("User", who)) => who == "*" || who == name,
            Some(("Role", role)) => roles.iter().any(|r| r == role),
            _ => false,
        }
    }

    fn covers_resource(&self, ty: ResourceType, name: &str) -> bool {
        if self.resource_type != ty {
            return false;
        }
        match (ty, self.pattern) {
            (ResourceType::Cluster, _) => true,
            (_, PatternType::Literal) => self.name == "*" || self.name == name,
            (_, PatternType::Prefixed) => name.starts_with(&self.name),
        }
    }

    fn covers_operation(&self, op: Operation) -> bool {
        self.operation == Operation::All
            || self.operation == op
            // Kafka's rule: allowing any operation allows describing; denying describe
            // does not deny the rest.
            || (op == Operation::Describe
                && self.permission == Permission::Allow
                && self.operation != Operation::Create)
    }
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {}",
            self.permission, self.principal, self.operation, self.resource_type
        )?;
        if self.resource_type != ResourceType::Cluster {
            write!(f, " {}", self.name)?;
            if self.pattern == PatternType::Prefixed {
                f.write_str("*")?;
            }
        }
        Ok(())
    }
}

impl AclEntry {
    /// An entry from its wire form; the error names the bad field.
    pub fn from_proto(e: &rafka_proto::v1::AclEntry) -> Result<Self, String> {
        let or = |s: &str, d: &'static str| {
            if s.is_empty() {
                d.to_string()
            } else {
                s.to_string()
            }
        };
        let entry = Self {
            principal: e.principal.clone(),
            resource_type: e.resource_type.parse()?,
            pattern: or(&e.pattern, "literal").parse()?,
            name: e.name.clone(),
            operation: e.operation.parse()?,
            permission: or(&e.permission, "allow").parse()?,
        };
        entry.validate()?;
        Ok(entry)
    }

    /// Its wire form.
    pub fn to_proto(&self) -> rafka_proto::v1::AclEntry {
        rafka_proto::v1::AclEntry {
            principal: self.principal.clone(),
            resource_type: self.resource_type.to_string(),
            pattern: self.pattern.to_string(),
            name: self.name.clone(),
            operation: self.operation.to_string(),
            permission: self.permission.to_string(),
        }
    }
}

/// The decision for one request.
pub fn check(
    acls: &[AclEntry],
    principal: &str,
    roles: &[String],
    op: Operation,
    ty: ResourceType,
    name: &str,
) -> Result<(), String> {
    if ty == ResourceType::Topic && name.starts_with("__") {
        return Err(format!(
            "`{principal}` may not {op} internal topic `{}` (super users only)",
            crate::error::shown(name)
        ));
    }
    let mut allowed = false;
    for e in acls {
        if e.covers_principal(principal, roles)
            && e.covers_resource(ty, name)
            && e.covers_operation(op)
        {
            match e.permission {
                Permission::Deny => {
                    return Err(format!(
                        "`{principal}` may not {op} {ty}{}: denied by `{e}`",
                        described(ty, name)
                    ))
                }
                Permission::Allow => allowed = true,
            }
        }
    }
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "`{principal}` may not {op} {ty}{}: no ACL allows it",
            described(ty, name)
        ))
    }
}

/// Whether an entry allows `principal` to write some topic.
pub fn may_write_some_topic(acls: &[AclEntry], principal: &super::Principal) -> bool {
    acls.iter().any(|e| {
        e.permission == Permission::Allow
            && e.resource_type == ResourceType::Topic
            && matches!(e.operation, Operation::Write | Operation::All)
            && e.covers_principal(&principal.name, &principal.roles)
    })
}

fn described(ty: ResourceType, name: &str) -> String {
    match ty {
        ResourceType::Cluster => String::new(),
        _ => format!(" `{}`", crate::error::shown(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        p: &str,
        ty: ResourceType,
        pat: PatternType,
        name: &str,
        op: Operation,
        perm: Permission,
    ) -> AclEntry {
        AclEntry {
            principal: p.into(),
            resource_type: ty,
            pattern: pat,
            name: name.into(),
            operation: op,
            permission: perm,
        }
    }

    #[test]
    fn deny_wins_prefixes_match_and_roles_count() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let acls = vec![
            entry("User:alice", Topic, Prefixed, "orders.", Write, Allow),
            entry("User:alice", Topic, Literal, "orders.secret", All, Deny),
            entry("Role:reader", Topic, Literal, "*", Read, Allow),
            entry("User:*", Group, Prefixed, "app-", Read, Allow),
        ];
        let none: Vec<String> = vec![];
        let reader = vec!["reader".to_string()];
        assert!(check(&acls, "alice", &none, Write, Topic, "orders.eu").is_ok());
        assert!(check(&acls, "alice", &none, Describe, Topic, "orders.eu").is_ok());
        let e = check(&acls, "alice", &none, Write, Topic, "orders.secret").unwrap_err();
        assert!(
            e.contains("denied by") && e.contains("orders.secret"),
            "{e}"
        );
        let e = check(&acls, "alice", &none, Read, Topic, "orders.eu").unwrap_err();
        assert!(
            e.contains("no ACL allows it") && e.contains("`alice`"),
            "{e}"
        );
        assert!(check(&acls, "bob", &reader, Read, Topic, "anything").is_ok());
        assert!(check(&acls, "bob", &none, Read, Topic, "anything").is_err());
        assert!(check(&acls, "bob", &none, Read, Group, "app-1").is_ok());
        assert!(check(&acls, "bob", &none, Read, Group, "other").is_err());
        let e = check(&acls, "bob", &reader, Read, Topic, "__consumer_offsets").unwrap_err();
        assert!(e.contains("internal topic"), "{e}");
    }

    #[test]
    fn names_parse_and_entries_validate() {
        assert_eq!("WRITE".parse::<Operation>(), Ok(Operation::Write));
        assert!("fly".parse::<Operation>().unwrap_err().contains("read"));
        let mut e = entry(
            "alice",
            ResourceType::Topic,
            PatternType::Literal,
            "t",
            Operation::Read,
            Permission::Allow,
        );
        assert!(e.validate().is_err());
        e.principal = "User:alice".into();
        assert!(e.validate().is_ok());
        e.name.clear();
        assert!(e.validate().is_err());
    }
}
