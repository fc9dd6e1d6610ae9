// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Governor} from "@openzeppelin/contracts/governance/Governor.sol";
import {GovernorCountingSimple} from "@openzeppelin/contracts/governance/extensions/GovernorCountingSimple.sol";
import {GovernorSettings} from "@openzeppelin/contracts/governance/extensions/GovernorSettings.sol";
import {GovernorTimelockControl} from "@openzeppelin/contracts/governance/extensions/GovernorTimelockControl.sol";
import {GovernorVotes} from "@openzeppelin/contracts/governance/extensions/GovernorVotes.sol";
import {GovernorVotesQuorumFraction} from "@openzeppelin/contracts/governance/extensions/GovernorVotesQuorumFraction.sol";
import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";
import {IVotes} from "@openzeppelin/contracts/governance/utils/IVotes.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";

/// @title OPEN holders' Governor: the governance timelock's only proposer and canceller.
/// @notice Votes are OPEN's ERC20Votes checkpoints (block-number clock); quorum is a fraction of the supply at
/// the proposal's snapshot; a proposal that passes is queued in the timelock and runs after its delay.
/// `proposeBySig` lets a holder propose by an EIP-712 signature that anyone relays (as `castVoteBySig` does
/// for votes), so holders without gas keep their own address as the proposer and their own threshold check.
contract OpenGovernor is
    Governor,
    GovernorSettings,
    GovernorCountingSimple,
    GovernorVotes,
    GovernorVotesQuorumFraction,
    GovernorTimelockControl
{
    bytes32 public constant PROPOSE_TYPEHASH =
        keccak256("Propose(address proposer,bytes32 actionsHash,bytes32 descriptionHash,uint256 nonce)");

    constructor(
        IVotes token_,
        TimelockController timelock_,
        uint48 votingDelay_,
        uint32 votingPeriod_,
        uint256 proposalThreshold_,
        uint256 quorumPercent
    )
        Governor("OpenGovernor")
        GovernorSettings(votingDelay_, votingPeriod_, proposalThreshold_)
        GovernorVotes(token_)
        GovernorVotesQuorumFraction(quorumPercent)
        GovernorTimelockControl(timelock_)
    {}

    /// @notice The hash a proposer signs over the actions: keccak256(abi.encode(targets, values, calldatas)).
    function actionsHash(address[] memory targets, uint256[] memory values, bytes[] memory calldatas)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(targets, values, calldatas));
    }

    /// @notice Propose on behalf of `proposer`, who signed `Propose` (EIP-712, nonce shared with ballots).
    /// The same checks as `propose` apply to `proposer`: the `#proposer=` suffix and the proposal threshold.
    function proposeBySig(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        string memory description,
        address proposer,
        bytes memory signature
    ) public returns (uint256) {
        bytes32 digest = _hashTypedDataV4(
            keccak256(
                abi.encode(
                    PROPOSE_TYPEHASH,
                    proposer,
                    actionsHash(targets, values, calldatas),
                    keccak256(bytes(description)),
                    _useNonce(proposer)
                )
            )
        );
        if (!SignatureChecker.isValidSignatureNow(proposer, digest, signature)) revert GovernorInvalidSignature(proposer);
        if (!_isValidDescriptionForProposer(proposer, description)) revert GovernorRestrictedProposer(proposer);
        uint256 threshold = proposalThreshold();
        if (threshold > 0) {
            uint256 votes = getVotes(proposer, clock() - 1);
            if (votes < threshold) revert GovernorInsufficientProposerVotes(proposer, votes, threshold);
        }
        return _propose(targets, values, calldatas, description, proposer);
    }

    // --- the overrides Solidity requires for the combined extensions ------------------------------------

    function votingDelay() public view override(Governor, GovernorSettings) returns (uint256) {
        return super.votingDelay();
    }

    function votingPeriod() public view override(Governor, GovernorSettings) returns (uint256) {
        return super.votingPeriod();
    }

    function quorum(uint256 timepoint) public view override(Governor, GovernorVotesQuorumFraction) returns (uint256) {
        return super.quorum(timepoint);
    }

    function proposalThreshold() public view override(Governor, GovernorSettings) returns (uint256) {
        return super.proposalThreshold();
    }

    function state(uint256 proposalId) public view override(Governor, GovernorTimelockControl) returns (ProposalState) {
        return super.state(proposalId);
    }

    function proposalNeedsQueuing(uint256 proposalId)
        public
        view
        override(Governor, GovernorTimelockControl)
        returns (bool)
    {
        return super.proposalNeedsQueuing(proposalId);
    }

    function _queueOperations(
        uint256 proposalId,
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) internal override(Governor, GovernorTimelockControl) returns (uint48) {
        return super._queueOperations(proposalId, targets, values, calldatas, descriptionHash);
    }

    function _executeOperations(
        uint256 proposalId,
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) internal override(Governor, GovernorTimelockControl) {
        super._executeOperations(proposalId, targets, values, calldatas, descriptionHash);
    }

    function _cancel(
        address[] memory targets,
        uint256[] memory values,
        bytes[] memory calldatas,
        bytes32 descriptionHash
    ) internal override(Governor, GovernorTimelockControl) returns (uint256) {
        return super._cancel(targets, values, calldatas, descriptionHash);
    }

    function _executor() internal view override(Governor, GovernorTimelockControl) returns (address) {
        return super._executor();
    }
}
