// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Protocol parameters that only the application reads, set by governance (the timelock).
/// @notice Today: the reward epoch length. On-chain so that OPEN holders, not the operator, decide it; the
/// application reads it (cached) and keeps using the last value read while the chain is down.
contract ProtocolParameters is AccessControl {
    bytes32 public constant GOVERNANCE_ROLE = keccak256("GOVERNANCE_ROLE");
    uint64 public constant MIN_EPOCH_SECONDS = 60;
    uint64 public constant MAX_EPOCH_SECONDS = 30 days;

    uint64 public epochSeconds;

    event EpochSecondsSet(uint64 epochSeconds);

    error ZeroAddress();
    error BadEpochSeconds(uint64 epochSeconds);

    /// @param governance the timelock: admin of every role and the only governor of the parameters.
    constructor(address governance, uint64 epochSeconds_) {
        if (governance == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, governance);
        _grantRole(GOVERNANCE_ROLE, governance);
        _setEpochSeconds(epochSeconds_);
    }

    function setEpochSeconds(uint64 epochSeconds_) external onlyRole(GOVERNANCE_ROLE) {
        _setEpochSeconds(epochSeconds_);
    }

    function _setEpochSeconds(uint64 value) private {
        if (value < MIN_EPOCH_SECONDS || value > MAX_EPOCH_SECONDS) revert BadEpochSeconds(value);
        epochSeconds = value;
        emit EpochSecondsSet(value);
    }
}
