//! The CLI's operations, each checked against `gateway/schema.graphql` (which a gateway test
//! keeps equal to the served schema) when the binary is built: a field or argument the API does
//! not have does not compile. The answers are read as the API's JSON (what `-o json` prints).

#![allow(clippy::upper_case_acronyms)]

use graphql_client::GraphQLQuery;

/// Scalars as they travel.
type DateTime = String;

macro_rules! operations {
    ($($name:ident),* $(,)?) => {
        $(
            #[derive(GraphQLQuery)]
            #[graphql(schema_path = "gateway/schema.graphql", query_path = "services/nullops/cli/queries.graphql", variables_derives = "Debug")]
            pub struct $name;
        )*
    };
}

operations!(
    Whoami,
    Login,
    Deployments,
    DeploymentById,
    CreateDeployment,
    DeleteDeployment,
    ExtendDeployment,
    RetryDeployment,
    CloneDeployment,
    AvailableTags,
    Logs,
    DeploymentUpdated,
    DeploymentLogs,
    Webhooks,
);
