// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title Reward epochs: one Merkle root of (account, amount) per epoch, funded when published.
/// @notice Leaf = keccak256(bytes.concat(keccak256(abi.encode(account, amount)))), sorted-pair tree
/// (OpenZeppelin MerkleProof). Each account claims once per epoch (anyone may submit the claim; the tokens
/// always go to the account). After the deadline what is left returns to the treasury. The fee split is a
/// parameter that only governance (a TimelockController) changes.
contract RewardDistributor is AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant GOVERNANCE_ROLE = keccak256("GOVERNANCE_ROLE");
    uint16 public constant BPS = 10_000;

    struct Epoch {
        bytes32 root;
        uint128 total;
        uint128 claimed;
        uint64 deadline;
        bool swept;
    }

    struct FeeSplit {
        uint16 contributorsBps;
        uint16 developerBps;
        uint16 protocolBps;
    }

    IERC20 public immutable token;
    address public immutable treasury;
    FeeSplit public feeSplit;
    mapping(uint256 => Epoch) public epochs;
    mapping(uint256 => mapping(address => bool)) public claimed;

    event EpochPublished(uint256 indexed epochId, bytes32 root, uint128 total, uint64 deadline);
    event Claimed(uint256 indexed epochId, address indexed account, uint128 amount);
    event Swept(uint256 indexed epochId, uint128 amount);
    event FeeSplitChanged(uint16 contributorsBps, uint16 developerBps, uint16 protocolBps);

    error ZeroAddress();
    error EpochExists(uint256 epochId);
    error UnknownEpoch(uint256 epochId);
    error EmptyRoot();
    error DeadlineInPast(uint64 deadline);
    error AlreadyClaimed(uint256 epochId, address account);
    error InvalidProof();
    error ClaimWindowClosed(uint256 epochId);
    error ClaimWindowOpen(uint256 epochId);
    error AlreadySwept(uint256 epochId);
    error BadFeeSplit();
    error ExceedsFunding(uint256 epochId);

    constructor(IERC20 token_, address treasury_, address admin, address operator, address governance, FeeSplit memory split) {
        if (address(token_) == address(0) || treasury_ == address(0) || admin == address(0) || governance == address(0)) {
            revert ZeroAddress();
        }
        token = token_;
        treasury = treasury_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, operator);
        _grantRole(GOVERNANCE_ROLE, governance);
        _setFeeSplit(split);
    }

    /// @notice Publish an epoch's root and fund it with `total` OPEN pulled from the operator, atomically.
    function publishEpoch(uint256 epochId, bytes32 root, uint128 total, uint64 deadline)
        external
        onlyRole(OPERATOR_ROLE)
        nonReentrant
    {
        if (root == bytes32(0)) revert EmptyRoot();
        if (epochs[epochId].root != bytes32(0)) revert EpochExists(epochId);
        if (deadline <= block.timestamp) revert DeadlineInPast(deadline);
        epochs[epochId] = Epoch(root, total, 0, deadline, false);
        emit EpochPublished(epochId, root, total, deadline);
        token.safeTransferFrom(msg.sender, address(this), total);
    }

    function leaf(address account, uint128 amount) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, amount))));
    }

    function verify(uint256 epochId, address account, uint128 amount, bytes32[] calldata proof) public view returns (bool) {
        return MerkleProof.verifyCalldata(proof, epochs[epochId].root, leaf(account, amount));
    }

    /// @notice Pay `amount` to `account` for `epochId`, once. Proof length is bounded by the tree depth.
    function claim(uint256 epochId, address account, uint128 amount, bytes32[] calldata proof) external nonReentrant {
        Epoch storage e = epochs[epochId];
        if (e.root == bytes32(0)) revert UnknownEpoch(epochId);
        if (block.timestamp > e.deadline || e.swept) revert ClaimWindowClosed(epochId);
        if (claimed[epochId][account]) revert AlreadyClaimed(epochId, account);
        if (!MerkleProof.verifyCalldata(proof, e.root, leaf(account, amount))) revert InvalidProof();
        if (uint256(e.claimed) + amount > e.total) revert ExceedsFunding(epochId);
        claimed[epochId][account] = true;
        e.claimed += amount;
        emit Claimed(epochId, account, amount);
        token.safeTransfer(account, amount);
    }

    /// @notice After the deadline, return what was not claimed to the treasury. Anyone may call it.
    function sweep(uint256 epochId) external nonReentrant {
        Epoch storage e = epochs[epochId];
        if (e.root == bytes32(0)) revert UnknownEpoch(epochId);
        if (block.timestamp <= e.deadline) revert ClaimWindowOpen(epochId);
        if (e.swept) revert AlreadySwept(epochId);
        uint128 rest = e.total - e.claimed;
        e.swept = true;
        emit Swept(epochId, rest);
        if (rest > 0) token.safeTransfer(treasury, rest);
    }

    function setFeeSplit(FeeSplit calldata split) external onlyRole(GOVERNANCE_ROLE) {
        _setFeeSplit(split);
    }

    function _setFeeSplit(FeeSplit memory split) private {
        if (uint256(split.contributorsBps) + split.developerBps + split.protocolBps != BPS) revert BadFeeSplit();
        feeSplit = split;
        emit FeeSplitChanged(split.contributorsBps, split.developerBps, split.protocolBps);
    }
}
