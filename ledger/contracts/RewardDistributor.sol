// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title Cumulative rewards: one current Merkle root of (account, total earned so far), replaced each epoch.
/// @notice Leaf = keccak256(bytes.concat(keccak256(abi.encode(account, uint256 cumulative)))), OpenZeppelin
/// StandardMerkleTree layout. A claim pays `cumulative - claimed[generation][account]`, so one claim collects every
/// epoch so far (as Morpho's universal rewards distributor); anyone may submit it, the tokens always go to the
/// account. Each epoch's root is funded up to its cumulative total when published, so what is claimed never exceeds
/// what was funded. Claims close when no epoch was published before the latest deadline; then anyone sweeps the
/// unclaimed rest to the treasury and a new generation starts from zero. Only governance sets the fee split.
contract RewardDistributor is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant GOVERNANCE_ROLE = keccak256("GOVERNANCE_ROLE");
    uint16 public constant BPS = 10_000;

    /// @dev One storage slot, read once and written once per claim (the gas of a claim is mostly storage).
    /// uint96 holds 7.9e28 wei: 79 times OPEN's whole supply.
    struct State {
        uint96 funded; // cumulative amount funded in this generation
        uint96 claimed; // cumulative amount claimed in this generation
        uint40 deadline; // claims close after this: the latest epoch's deadline
        uint24 generation; // bumped by a sweep; totals of earlier generations no longer count
    }

    struct Epoch {
        bytes32 root;
        uint96 funded;
        uint40 deadline;
        uint24 generation;
    }

    struct FeeSplit {
        uint16 contributorsBps;
        uint16 developerBps;
        uint16 protocolBps;
    }

    IERC20 public immutable token;
    address public immutable treasury;
    FeeSplit public feeSplit;
    bytes32 public root; // the current root; zero before the first epoch and after a sweep
    State public state;
    uint256 public currentEpoch; // the epoch whose root is current (ids only grow)
    mapping(uint256 => Epoch) public epochs; // every published root, for audits
    mapping(uint256 => mapping(address => uint256)) public claimed; // generation => account => cumulative claimed

    event EpochPublished(uint256 indexed epochId, uint24 generation, bytes32 root, uint96 funded, uint40 deadline);
    event Claimed(address indexed account, uint24 generation, uint256 amount, uint256 cumulative);
    event Swept(uint24 indexed generation, uint256 amount);
    event FeeSplitChanged(uint16 contributorsBps, uint16 developerBps, uint16 protocolBps);

    error ZeroAddress();
    error StaleEpoch(uint256 epochId, uint256 currentEpoch);
    error WrongGeneration(uint24 generation, uint24 current);
    error EmptyRoot();
    error DeadlineInPast(uint64 deadline);
    error FundingDecreased(uint256 funded, uint256 current);
    error FundingOverflow(uint256 funded);
    error NothingPublished();
    error AlreadyClaimed(address account, uint256 cumulative);
    error InvalidProof();
    error ClaimWindowClosed();
    error ClaimWindowOpen();
    error LengthMismatch();
    error BadFeeSplit();
    error ExceedsFunding();

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

    /// @notice Make `root` (cumulative totals of `generation`) current and fund it up to `funded`, pulling the
    /// difference from the operator, atomically. Epoch ids only grow: a late, older epoch reverts (`StaleEpoch`);
    /// the newer root already holds its totals.
    function publishEpoch(uint256 epochId, uint24 generation, bytes32 root_, uint256 funded, uint64 deadline)
        external
        onlyRole(OPERATOR_ROLE)
        nonReentrant
    {
        State memory s = state;
        if (root_ == bytes32(0)) revert EmptyRoot();
        if (epochId <= currentEpoch) revert StaleEpoch(epochId, currentEpoch);
        if (generation != s.generation) revert WrongGeneration(generation, s.generation);
        if (deadline <= block.timestamp || deadline < s.deadline || deadline > type(uint40).max) {
            revert DeadlineInPast(deadline);
        }
        if (funded < s.funded) revert FundingDecreased(funded, s.funded);
        if (funded > type(uint96).max) revert FundingOverflow(funded);
        uint256 topUp = funded - s.funded;
        root = root_;
        currentEpoch = epochId;
        state = State(uint96(funded), s.claimed, uint40(deadline), s.generation);
        epochs[epochId] = Epoch(root_, uint96(funded), uint40(deadline), s.generation);
        emit EpochPublished(epochId, s.generation, root_, uint96(funded), uint40(deadline));
        if (topUp > 0) token.safeTransferFrom(msg.sender, address(this), topUp);
    }

    function leaf(address account, uint256 cumulative) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, cumulative))));
    }

    /// @notice Whether (account, cumulative) is in epoch `epochId`'s tree (any published epoch, current or not).
    function verify(uint256 epochId, address account, uint256 cumulative, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        return MerkleProof.verifyCalldata(proof, epochs[epochId].root, leaf(account, cumulative));
    }

    /// @notice What `account` can collect now with its leaf `cumulative` in the current root (0 if nothing).
    function claimable(address account, uint256 cumulative) external view returns (uint256) {
        uint256 already = claimed[state.generation][account];
        return cumulative > already ? cumulative - already : 0;
    }

    /// @notice Pay `account` everything it earned up to the current root that it has not claimed yet.
    function claim(address account, uint256 cumulative, bytes32[] calldata proof) external nonReentrant {
        State memory s = state;
        uint256 amount = _claimOne(s, root, account, cumulative, proof);
        if (amount == 0) revert AlreadyClaimed(account, cumulative);
        uint256 total = uint256(s.claimed) + amount;
        if (total > s.funded) revert ExceedsFunding();
        state.claimed = uint96(total);
        token.safeTransfer(account, amount);
    }

    /// @notice Claim for many accounts in one transaction (the server's custodial wallets). An account with
    /// nothing left to claim is skipped, so a resent batch pays no one twice; a bad proof reverts the batch.
    function claimMany(address[] calldata accounts, uint256[] calldata cumulatives, bytes32[][] calldata proofs)
        external
        nonReentrant
    {
        if (accounts.length != cumulatives.length || accounts.length != proofs.length) revert LengthMismatch();
        State memory s = state;
        bytes32 r = root;
        uint256 total = s.claimed;
        uint256[] memory amounts = new uint256[](accounts.length);
        for (uint256 i; i < accounts.length; ++i) {
            amounts[i] = _claimOne(s, r, accounts[i], cumulatives[i], proofs[i]);
            total += amounts[i];
        }
        if (total > s.funded) revert ExceedsFunding();
        state.claimed = uint96(total);
        for (uint256 i; i < accounts.length; ++i) {
            if (amounts[i] > 0) token.safeTransfer(accounts[i], amounts[i]);
        }
    }

    /// @dev Checks and records one claim; the caller updates `state.claimed` and pays (checks-effects-interactions).
    function _claimOne(State memory s, bytes32 r, address account, uint256 cumulative, bytes32[] calldata proof)
        private
        returns (uint256 amount)
    {
        if (r == bytes32(0)) revert NothingPublished();
        if (block.timestamp > s.deadline) revert ClaimWindowClosed();
        if (!MerkleProof.verifyCalldata(proof, r, leaf(account, cumulative))) revert InvalidProof();
        uint256 already = claimed[s.generation][account];
        if (cumulative <= already) return 0;
        amount = cumulative - already;
        claimed[s.generation][account] = cumulative;
        emit Claimed(account, s.generation, amount, cumulative);
    }

    /// @notice When no epoch was published before the latest deadline, return what is unclaimed to the
    /// treasury and start a new generation (cumulative totals restart from zero). Anyone may call it.
    function sweep() external nonReentrant {
        State memory s = state;
        if (root == bytes32(0)) revert NothingPublished();
        if (block.timestamp <= s.deadline) revert ClaimWindowOpen();
        uint256 rest = uint256(s.funded) - s.claimed;
        root = bytes32(0);
        state = State(0, 0, s.deadline, s.generation + 1);
        emit Swept(s.generation, rest);
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
