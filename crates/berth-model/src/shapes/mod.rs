//! Request and response types generated from the botocore service models.
//!
//! One module per AWS service; regenerate with `scripts/gen-shapes.py`.
#[allow(unused_imports)]
pub mod acm;
pub mod codedeploy;
pub mod ecr;
pub mod ecs;
pub mod logs;
pub mod secretsmanager;
pub mod servicediscovery;
pub mod ssm;
