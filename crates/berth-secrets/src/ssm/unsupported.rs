//! The Systems Manager operations outside Parameter Store, and why Berth
//! answers them with `UnsupportedOperationException` instead of acting.
//!
//! Almost all of Systems Manager manages *nodes*: machines that run the SSM
//! Agent, which registers with the service, runs documents and opens
//! sessions. Berth's hosts run the Berth agent, which runs ECS tasks and
//! nothing else, so there is nothing for these operations to act on. Each
//! entry names the missing piece.

const DOCUMENTS: &str = "SSM documents are run by the SSM Agent on managed nodes (Run Command, \
     State Manager, Automation); Berth has no managed nodes and no document runner, so it keeps \
     no documents.";
const RUN_COMMAND: &str = "Run Command sends documents to the SSM Agent on managed nodes; Berth's \
     hosts run the Berth agent, which does not take commands. To run a command in a task, use ECS \
     ExecuteCommand or `berth exec`.";
const SESSIONS: &str = "Session Manager (and just-in-time node access) needs the SSM Agent on a \
     managed node and the session-manager-plugin data channel; Berth has neither. For a shell in \
     a task, use `berth exec`.";
const AUTOMATION: &str = "Automation runs runbooks whose steps call other AWS services (EC2, \
     Lambda, CloudFormation ...) from an execution engine; Berth has no runbook engine and most \
     of those services.";
const STATE_MANAGER: &str = "State Manager associations apply SSM documents to managed nodes on \
     a schedule; Berth has no managed nodes or document runner.";
const MANAGED_NODES: &str = "Managed nodes (hybrid activations, instance information, Default \
     Host Management) are machines registered by the SSM Agent; Berth's hosts register with \
     Berth's own agent protocol as ECS container instances instead.";
const INVENTORY: &str = "Inventory is collected from managed nodes by the SSM Agent; Berth has no \
     managed nodes.";
const COMPLIANCE: &str = "Compliance data is reported by patching and State Manager runs on \
     managed nodes; Berth has neither.";
const PATCH_MANAGER: &str = "Patch Manager patches the operating systems of managed nodes; \
     Berth has no managed nodes, and its hosts' packages are not Berth's to patch.";
const MAINTENANCE_WINDOWS: &str = "Maintenance windows schedule Run Command, Automation, Lambda \
     and Step Functions tasks; Berth has none of those task runners.";
const OPSCENTER: &str = "OpsCenter OpsItems and OpsMetadata are raised by CloudWatch alarms, \
     EventBridge rules and AWS Config and remediated with Automation; Berth has none of these.";
const DATA_SYNC: &str = "Resource data sync exports inventory and OpsData to Amazon S3 (and \
     across AWS Organizations); Berth has no S3, no Organizations and no inventory.";
const CHANGE_CALENDAR: &str = "Change Calendar states come from ChangeCalendar SSM documents; \
     Berth keeps no SSM documents.";
const CLOUD_CONNECTORS: &str = "Cloud connectors link Systems Manager to another cloud's \
     account to manage its machines; Berth manages no machines through Systems Manager.";

/// Every operation of the SSM model Berth does not implement, with the
/// reason. Parameter Store (parameters, labels, tags, policies, resource
/// policies and its service settings) is implemented.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    ("AssociateOpsItemRelatedItem", OPSCENTER),
    ("CancelCommand", RUN_COMMAND),
    ("CancelMaintenanceWindowExecution", MAINTENANCE_WINDOWS),
    ("CreateActivation", MANAGED_NODES),
    ("CreateAssociation", STATE_MANAGER),
    ("CreateAssociationBatch", STATE_MANAGER),
    ("CreateCloudConnector", CLOUD_CONNECTORS),
    ("CreateDocument", DOCUMENTS),
    ("CreateMaintenanceWindow", MAINTENANCE_WINDOWS),
    ("CreateOpsItem", OPSCENTER),
    ("CreateOpsMetadata", OPSCENTER),
    ("CreatePatchBaseline", PATCH_MANAGER),
    ("CreateResourceDataSync", DATA_SYNC),
    ("DeleteActivation", MANAGED_NODES),
    ("DeleteAssociation", STATE_MANAGER),
    ("DeleteCloudConnector", CLOUD_CONNECTORS),
    ("DeleteDocument", DOCUMENTS),
    ("DeleteInventory", INVENTORY),
    ("DeleteMaintenanceWindow", MAINTENANCE_WINDOWS),
    ("DeleteOpsItem", OPSCENTER),
    ("DeleteOpsMetadata", OPSCENTER),
    ("DeletePatchBaseline", PATCH_MANAGER),
    ("DeleteResourceDataSync", DATA_SYNC),
    (
        "DeregisterDefaultHostManagementConfiguration",
        MANAGED_NODES,
    ),
    ("DeregisterManagedInstance", MANAGED_NODES),
    ("DeregisterPatchBaselineForPatchGroup", PATCH_MANAGER),
    ("DeregisterTargetFromMaintenanceWindow", MAINTENANCE_WINDOWS),
    ("DeregisterTaskFromMaintenanceWindow", MAINTENANCE_WINDOWS),
    ("DescribeActivations", MANAGED_NODES),
    ("DescribeAssociation", STATE_MANAGER),
    ("DescribeAssociationExecutionTargets", STATE_MANAGER),
    ("DescribeAssociationExecutions", STATE_MANAGER),
    ("DescribeAutomationExecutions", AUTOMATION),
    ("DescribeAutomationStepExecutions", AUTOMATION),
    ("DescribeAvailablePatches", PATCH_MANAGER),
    ("DescribeDocument", DOCUMENTS),
    ("DescribeDocumentPermission", DOCUMENTS),
    ("DescribeEffectiveInstanceAssociations", STATE_MANAGER),
    ("DescribeEffectivePatchesForPatchBaseline", PATCH_MANAGER),
    ("DescribeInstanceAssociationsStatus", STATE_MANAGER),
    ("DescribeInstanceInformation", MANAGED_NODES),
    ("DescribeInstancePatchStates", PATCH_MANAGER),
    ("DescribeInstancePatchStatesForPatchGroup", PATCH_MANAGER),
    ("DescribeInstancePatches", PATCH_MANAGER),
    ("DescribeInstanceProperties", MANAGED_NODES),
    ("DescribeInventoryDeletions", INVENTORY),
    (
        "DescribeMaintenanceWindowExecutionTaskInvocations",
        MAINTENANCE_WINDOWS,
    ),
    (
        "DescribeMaintenanceWindowExecutionTasks",
        MAINTENANCE_WINDOWS,
    ),
    ("DescribeMaintenanceWindowExecutions", MAINTENANCE_WINDOWS),
    ("DescribeMaintenanceWindowSchedule", MAINTENANCE_WINDOWS),
    ("DescribeMaintenanceWindowTargets", MAINTENANCE_WINDOWS),
    ("DescribeMaintenanceWindowTasks", MAINTENANCE_WINDOWS),
    ("DescribeMaintenanceWindows", MAINTENANCE_WINDOWS),
    ("DescribeMaintenanceWindowsForTarget", MAINTENANCE_WINDOWS),
    ("DescribeOpsItems", OPSCENTER),
    ("DescribePatchBaselines", PATCH_MANAGER),
    ("DescribePatchGroupState", PATCH_MANAGER),
    ("DescribePatchGroups", PATCH_MANAGER),
    ("DescribePatchProperties", PATCH_MANAGER),
    ("DescribeSessions", SESSIONS),
    ("DisassociateOpsItemRelatedItem", OPSCENTER),
    ("GetAccessToken", SESSIONS),
    ("GetAutomationExecution", AUTOMATION),
    ("GetCalendarState", CHANGE_CALENDAR),
    ("GetCloudConnector", CLOUD_CONNECTORS),
    ("GetCommandInvocation", RUN_COMMAND),
    ("GetConnectionStatus", SESSIONS),
    ("GetDefaultPatchBaseline", PATCH_MANAGER),
    ("GetDeployablePatchSnapshotForInstance", PATCH_MANAGER),
    ("GetDocument", DOCUMENTS),
    ("GetExecutionPreview", AUTOMATION),
    ("GetInventory", INVENTORY),
    ("GetInventorySchema", INVENTORY),
    ("GetMaintenanceWindow", MAINTENANCE_WINDOWS),
    ("GetMaintenanceWindowExecution", MAINTENANCE_WINDOWS),
    ("GetMaintenanceWindowExecutionTask", MAINTENANCE_WINDOWS),
    (
        "GetMaintenanceWindowExecutionTaskInvocation",
        MAINTENANCE_WINDOWS,
    ),
    ("GetMaintenanceWindowTask", MAINTENANCE_WINDOWS),
    ("GetOpsItem", OPSCENTER),
    ("GetOpsMetadata", OPSCENTER),
    ("GetOpsSummary", OPSCENTER),
    ("GetPatchBaseline", PATCH_MANAGER),
    ("GetPatchBaselineForPatchGroup", PATCH_MANAGER),
    ("ListAssociationVersions", STATE_MANAGER),
    ("ListAssociations", STATE_MANAGER),
    ("ListCloudConnectors", CLOUD_CONNECTORS),
    ("ListCommandInvocations", RUN_COMMAND),
    ("ListCommands", RUN_COMMAND),
    ("ListComplianceItems", COMPLIANCE),
    ("ListComplianceSummaries", COMPLIANCE),
    ("ListDocumentMetadataHistory", DOCUMENTS),
    ("ListDocumentVersions", DOCUMENTS),
    ("ListDocuments", DOCUMENTS),
    ("ListInventoryEntries", INVENTORY),
    ("ListNodes", MANAGED_NODES),
    ("ListNodesSummary", MANAGED_NODES),
    ("ListOpsItemEvents", OPSCENTER),
    ("ListOpsItemRelatedItems", OPSCENTER),
    ("ListOpsMetadata", OPSCENTER),
    ("ListResourceComplianceSummaries", COMPLIANCE),
    ("ListResourceDataSync", DATA_SYNC),
    ("ModifyDocumentPermission", DOCUMENTS),
    ("PutComplianceItems", COMPLIANCE),
    ("PutInventory", INVENTORY),
    ("RegisterDefaultHostManagementConfiguration", MANAGED_NODES),
    ("RegisterDefaultPatchBaseline", PATCH_MANAGER),
    ("RegisterPatchBaselineForPatchGroup", PATCH_MANAGER),
    ("RegisterTargetWithMaintenanceWindow", MAINTENANCE_WINDOWS),
    ("RegisterTaskWithMaintenanceWindow", MAINTENANCE_WINDOWS),
    ("ResumeSession", SESSIONS),
    ("SendAutomationSignal", AUTOMATION),
    ("SendCommand", RUN_COMMAND),
    ("StartAccessRequest", SESSIONS),
    ("StartAssociationsOnce", STATE_MANAGER),
    ("StartAutomationExecution", AUTOMATION),
    ("StartChangeRequestExecution", AUTOMATION),
    ("StartExecutionPreview", AUTOMATION),
    ("StartSession", SESSIONS),
    ("StopAutomationExecution", AUTOMATION),
    ("TerminateSession", SESSIONS),
    ("UpdateAssociation", STATE_MANAGER),
    ("UpdateAssociationStatus", STATE_MANAGER),
    ("UpdateCloudConnector", CLOUD_CONNECTORS),
    ("UpdateDocument", DOCUMENTS),
    ("UpdateDocumentDefaultVersion", DOCUMENTS),
    ("UpdateDocumentMetadata", DOCUMENTS),
    ("UpdateMaintenanceWindow", MAINTENANCE_WINDOWS),
    ("UpdateMaintenanceWindowTarget", MAINTENANCE_WINDOWS),
    ("UpdateMaintenanceWindowTask", MAINTENANCE_WINDOWS),
    ("UpdateManagedInstanceRole", MANAGED_NODES),
    ("UpdateOpsItem", OPSCENTER),
    ("UpdateOpsMetadata", OPSCENTER),
    ("UpdatePatchBaseline", PATCH_MANAGER),
    ("UpdateResourceDataSync", DATA_SYNC),
    ("ValidateCloudConnector", CLOUD_CONNECTORS),
];

/// Why `operation` is not implemented, if it is one of [`NOT_IMPLEMENTED`].
pub fn reason(operation: &str) -> Option<&'static str> {
    NOT_IMPLEMENTED
        .iter()
        .find(|(op, _)| *op == operation)
        .map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_implemented_or_listed_once() {
        let ops = berth_model::shapes::ssm::OPERATIONS;
        for (op, why) in NOT_IMPLEMENTED {
            assert!(ops.contains(op), "{op} is not in the model");
            assert!(!why.is_empty());
            assert_eq!(NOT_IMPLEMENTED.iter().filter(|(o, _)| o == op).count(), 1);
        }
        let implemented = ops.iter().filter(|op| reason(op).is_none()).count();
        assert_eq!(implemented, 19, "Parameter Store's 19 operations");
    }
}
