//! Where the operator looks: every namespace, or a list of them, each watched on its own.

use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource};

/// Which namespaces the operator serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    List(Vec<String>),
}

impl Namespaces {
    /// One watch scope per namespace of the list, or one for the whole cluster.
    pub fn scopes(&self) -> Vec<Scope> {
        match self {
            Namespaces::All => vec![Scope::Cluster],
            Namespaces::List(list) => list.iter().cloned().map(Scope::Namespace).collect(),
        }
    }
}

/// The reach of one watch: the whole cluster or one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Namespace(String),
}

impl Scope {
    /// The API of a namespaced kind within this scope.
    pub fn api<K>(&self, client: Client) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Scope::Cluster => Api::all(client),
            Scope::Namespace(namespace) => Api::namespaced(client, namespace),
        }
    }

    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Scope::Cluster => true,
            Scope::Namespace(own) => own == namespace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_watched_namespace_by_namespace() {
        assert_eq!(Namespaces::All.scopes(), [Scope::Cluster]);
        let list = Namespaces::List(vec!["a".into(), "b".into()]).scopes();
        assert_eq!(list, [Scope::Namespace("a".into()), Scope::Namespace("b".into())]);
        assert!(list[0].contains("a") && !list[0].contains("b"));
        assert!(Scope::Cluster.contains("anything"));
    }
}
