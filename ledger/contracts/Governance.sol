// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title The governance timelock: the only holder of RewardDistributor's GOVERNANCE_ROLE.
/// @notice Proposals wait `minDelay` seconds before anyone in the executor set can run them.
contract Governance is TimelockController {
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors)
        TimelockController(minDelay, proposers, executors, address(0))
    {}
}
