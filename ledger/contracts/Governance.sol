// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title The governance timelock: admin of every AccessControl contract and holder of each GOVERNANCE_ROLE.
/// @notice Its only proposer and canceller is OpenGovernor (OPEN holders' votes); anyone may execute once
/// `minDelay` seconds passed. `setupAdmin` exists only while deploy_all wires the Governor in: it renounces
/// the role in the same deployment, leaving the timelock as its own and only admin.
contract Governance is TimelockController {
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address setupAdmin)
        TimelockController(minDelay, proposers, executors, setupAdmin)
    {}
}
