// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title Datanets, stakes on contributions, curation decisions and versions.
/// @notice Ids are the application's database ids. A stake is paid by its `staker` (the contributor or a
/// sponsor such as the operator for custodial demo wallets). Reject sends `amount * slashBps / 10000`
/// (rounded down) to the treasury and the rest, dust included, back to the staker. Accept keeps the stake
/// bonded for `bondSeconds` (governed): harm found later (net negative influence on a model's clean
/// validation set) can still be slashed within it by a curator (`slashAccepted`, the same split as a
/// rejection); after it anyone may `release` the stake to its staker. With `bondSeconds == 0` accept
/// releases at once. Curators act directly (msg.sender) or by an EIP-712 signature that anyone relays.
contract DatanetRegistry is AccessControl, ReentrancyGuard, EIP712 {
    using SafeERC20 for IERC20;

    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant GOVERNANCE_ROLE = keccak256("GOVERNANCE_ROLE");
    bytes32 public constant DECISION_TYPEHASH =
        keccak256("Decision(uint256 datanetId,bytes32 contentHash,bool accept)");
    bytes32 public constant SLASH_TYPEHASH = keccak256("Slash(uint256 datanetId,bytes32 contentHash)");
    uint64 public constant MAX_BOND_SECONDS = 365 days;
    uint16 public constant BPS = 10_000;
    uint256 public constant MAX_CURATORS = 32;

    enum StakeStatus { None, Pending, Accepted, Rejected }
    /// @notice What happened to an accepted stake's tokens (status stays Accepted: the decision is not undone).
    enum Bond { None, Bonded, Released, Slashed }

    struct Datanet {
        address owner;
        uint16 slashBps;
        bool exists;
        uint128 minStake;
        uint32 curatorCount;
        uint32 versionCount;
    }

    struct Stake {
        address contributor;
        address staker;
        uint128 amount;
        StakeStatus status;
        uint64 bondedUntil; // accepted stakes: slashable before, releasable from this time
        Bond bond;
    }

    struct Version {
        bytes32 merkleRoot;
        uint64 recordCount;
        uint64 registeredAt;
    }

    IERC20 public immutable token;
    address public immutable treasury;
    uint64 public bondSeconds;

    mapping(uint256 => Datanet) public datanets;
    mapping(uint256 => mapping(address => bool)) public isCurator;
    mapping(uint256 => mapping(bytes32 => Stake)) public stakes;
    mapping(uint256 => mapping(uint256 => Version)) public versions;

    event DatanetCreated(uint256 indexed datanetId, address indexed owner, uint128 minStake, uint16 slashBps);
    event DatanetTermsSet(uint256 indexed datanetId, uint128 minStake, uint16 slashBps);
    event CuratorSet(uint256 indexed datanetId, address indexed curator, bool enabled);
    event Staked(uint256 indexed datanetId, bytes32 indexed contentHash, address indexed contributor, address staker, uint128 amount);
    event Accepted(uint256 indexed datanetId, bytes32 indexed contentHash, address indexed curator, uint128 bonded);
    event Released(uint256 indexed datanetId, bytes32 indexed contentHash, address indexed staker, uint128 amount);
    event SlashedAccepted(uint256 indexed datanetId, bytes32 indexed contentHash, address indexed curator, uint128 slashed, uint128 returned);
    event BondSecondsSet(uint64 bondSeconds);
    event Rejected(uint256 indexed datanetId, bytes32 indexed contentHash, address indexed curator, uint128 slashed, uint128 returned);
    event VersionRegistered(uint256 indexed datanetId, uint256 indexed number, bytes32 merkleRoot, uint64 recordCount);

    error ZeroAddress();
    error DatanetExists(uint256 datanetId);
    error UnknownDatanet(uint256 datanetId);
    error BadSlash(uint16 slashBps);
    error TooManyCurators(uint256 count);
    error NotCurator(address account);
    error NotOwnerOrOperator(address account);
    error StakeTooSmall(uint128 amount, uint128 minStake);
    error StakeExists(bytes32 contentHash);
    error NotPending(bytes32 contentHash);
    error VersionExists(uint256 number);
    error EmptyRoot();
    error NotBonded(bytes32 contentHash);
    error BondRunning(bytes32 contentHash, uint64 bondedUntil);
    error BondOver(bytes32 contentHash, uint64 bondedUntil);
    error BadBond(uint64 bondSeconds);

    constructor(IERC20 token_, address treasury_, address admin, address operator, uint64 bondSeconds_)
        EIP712("DatanetRegistry", "1")
    {
        if (address(token_) == address(0) || treasury_ == address(0) || admin == address(0)) revert ZeroAddress();
        if (bondSeconds_ > MAX_BOND_SECONDS) revert BadBond(bondSeconds_);
        token = token_;
        treasury = treasury_;
        bondSeconds = bondSeconds_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(GOVERNANCE_ROLE, admin); // the timelock: OPEN holders set each Datanet's terms
        _grantRole(OPERATOR_ROLE, operator);
    }

    // --- datanets -------------------------------------------------------------------------------

    function createDatanet(uint256 datanetId, address owner, address[] calldata curators, uint128 minStake, uint16 slashBps)
        external
        onlyRole(OPERATOR_ROLE)
    {
        if (owner == address(0)) revert ZeroAddress();
        if (datanets[datanetId].exists) revert DatanetExists(datanetId);
        if (slashBps > BPS) revert BadSlash(slashBps);
        if (curators.length > MAX_CURATORS) revert TooManyCurators(curators.length);
        datanets[datanetId] = Datanet(owner, slashBps, true, minStake, 0, 0);
        emit DatanetCreated(datanetId, owner, minStake, slashBps);
        for (uint256 i = 0; i < curators.length; ++i) {
            _setCurator(datanetId, curators[i], true);
        }
    }

    /// @notice Governance changes a Datanet's minimum stake and slash rate. They apply to stakes made after it
    /// and to rejections after it (a pending stake is slashed at the rate in force when it is rejected).
    function setDatanetTerms(uint256 datanetId, uint128 minStake, uint16 slashBps) external onlyRole(GOVERNANCE_ROLE) {
        Datanet storage d = _datanet(datanetId);
        if (slashBps > BPS) revert BadSlash(slashBps);
        d.minStake = minStake;
        d.slashBps = slashBps;
        emit DatanetTermsSet(datanetId, minStake, slashBps);
    }

    /// @notice Governance sets how long an accepted stake stays bonded (slashable). Applies to accepts after it.
    function setBondSeconds(uint64 bondSeconds_) external onlyRole(GOVERNANCE_ROLE) {
        if (bondSeconds_ > MAX_BOND_SECONDS) revert BadBond(bondSeconds_);
        bondSeconds = bondSeconds_;
        emit BondSecondsSet(bondSeconds_);
    }

    /// @notice The Datanet's owner or the operator appoints or removes a curator.
    function setCurator(uint256 datanetId, address curator, bool enabled) external {
        Datanet storage d = _datanet(datanetId);
        if (msg.sender != d.owner && !hasRole(OPERATOR_ROLE, msg.sender)) revert NotOwnerOrOperator(msg.sender);
        _setCurator(datanetId, curator, enabled);
    }

    function _setCurator(uint256 datanetId, address curator, bool enabled) private {
        if (curator == address(0)) revert ZeroAddress();
        Datanet storage d = datanets[datanetId];
        if (isCurator[datanetId][curator] == enabled) return;
        if (enabled) {
            if (d.curatorCount >= MAX_CURATORS) revert TooManyCurators(d.curatorCount + 1);
            d.curatorCount += 1;
        } else {
            d.curatorCount -= 1;
        }
        isCurator[datanetId][curator] = enabled;
        emit CuratorSet(datanetId, curator, enabled);
    }

    // --- stakes ---------------------------------------------------------------------------------

    /// @notice Lock `amount` OPEN from msg.sender on a contribution of `contributor`.
    function stake(uint256 datanetId, bytes32 contentHash, address contributor, uint128 amount) external nonReentrant {
        Datanet storage d = _datanet(datanetId);
        if (contributor == address(0)) revert ZeroAddress();
        if (amount < d.minStake) revert StakeTooSmall(amount, d.minStake);
        Stake storage s = stakes[datanetId][contentHash];
        if (s.status != StakeStatus.None) revert StakeExists(contentHash);
        stakes[datanetId][contentHash] = Stake(contributor, msg.sender, amount, StakeStatus.Pending, 0, Bond.None);
        emit Staked(datanetId, contentHash, contributor, msg.sender, amount);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    function accept(uint256 datanetId, bytes32 contentHash) external {
        _decide(datanetId, contentHash, msg.sender, true);
    }

    function reject(uint256 datanetId, bytes32 contentHash) external {
        _decide(datanetId, contentHash, msg.sender, false);
    }

    /// @notice Relay a curator's signed decision (EIP-712 `Decision`).
    function decideBySig(uint256 datanetId, bytes32 contentHash, bool accept_, bytes calldata signature) external {
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(DECISION_TYPEHASH, datanetId, contentHash, accept_)));
        _decide(datanetId, contentHash, ECDSA.recover(digest, signature), accept_);
    }

    function decisionDigest(uint256 datanetId, bytes32 contentHash, bool accept_) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(DECISION_TYPEHASH, datanetId, contentHash, accept_)));
    }

    /// @notice The split a rejection makes: slashed to the treasury, returned to the staker (gets the dust).
    function slashAmounts(uint128 amount, uint16 slashBps) public pure returns (uint128 slashed, uint128 returned) {
        slashed = uint128((uint256(amount) * slashBps) / BPS);
        returned = amount - slashed;
    }

    function _decide(uint256 datanetId, bytes32 contentHash, address curator, bool accept_) private nonReentrant {
        Datanet storage d = _datanet(datanetId);
        if (!isCurator[datanetId][curator]) revert NotCurator(curator);
        Stake storage s = stakes[datanetId][contentHash];
        if (s.status != StakeStatus.Pending) revert NotPending(contentHash);
        uint128 amount = s.amount;
        address staker = s.staker;
        if (accept_) {
            s.status = StakeStatus.Accepted;
            emit Accepted(datanetId, contentHash, curator, amount);
            if (bondSeconds == 0) {
                s.bond = Bond.Released;
                emit Released(datanetId, contentHash, staker, amount);
                token.safeTransfer(staker, amount);
            } else {
                s.bond = Bond.Bonded;
                s.bondedUntil = uint64(block.timestamp) + bondSeconds;
            }
        } else {
            (uint128 slashed, uint128 returned) = slashAmounts(amount, d.slashBps);
            s.status = StakeStatus.Rejected;
            emit Rejected(datanetId, contentHash, curator, slashed, returned);
            if (slashed > 0) token.safeTransfer(treasury, slashed);
            if (returned > 0) token.safeTransfer(staker, returned);
        }
    }

    // --- the bond of an accepted stake ---------------------------------------------------------

    /// @notice After the bond period anyone may release an accepted stake to its staker.
    function release(uint256 datanetId, bytes32 contentHash) external nonReentrant {
        Stake storage s = stakes[datanetId][contentHash];
        if (s.bond != Bond.Bonded) revert NotBonded(contentHash);
        if (block.timestamp < s.bondedUntil) revert BondRunning(contentHash, s.bondedUntil);
        s.bond = Bond.Released;
        emit Released(datanetId, contentHash, s.staker, s.amount);
        token.safeTransfer(s.staker, s.amount);
    }

    /// @notice Within the bond period a curator slashes an accepted stake at the Datanet's rate in force now:
    /// the same split as a rejection (to the treasury, the rest with the dust back to the staker).
    function slashAccepted(uint256 datanetId, bytes32 contentHash) external {
        _slashAccepted(datanetId, contentHash, msg.sender);
    }

    /// @notice Relay a curator's signed slash (EIP-712 `Slash`).
    function slashAcceptedBySig(uint256 datanetId, bytes32 contentHash, bytes calldata signature) external {
        _slashAccepted(datanetId, contentHash, ECDSA.recover(slashDigest(datanetId, contentHash), signature));
    }

    function slashDigest(uint256 datanetId, bytes32 contentHash) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(SLASH_TYPEHASH, datanetId, contentHash)));
    }

    function _slashAccepted(uint256 datanetId, bytes32 contentHash, address curator) private nonReentrant {
        Datanet storage d = _datanet(datanetId);
        if (!isCurator[datanetId][curator]) revert NotCurator(curator);
        Stake storage s = stakes[datanetId][contentHash];
        if (s.bond != Bond.Bonded) revert NotBonded(contentHash);
        if (block.timestamp >= s.bondedUntil) revert BondOver(contentHash, s.bondedUntil);
        (uint128 slashed, uint128 returned) = slashAmounts(s.amount, d.slashBps);
        s.bond = Bond.Slashed;
        emit SlashedAccepted(datanetId, contentHash, curator, slashed, returned);
        if (slashed > 0) token.safeTransfer(treasury, slashed);
        if (returned > 0) token.safeTransfer(s.staker, returned);
    }

    // --- versions -------------------------------------------------------------------------------

    /// @notice Register an immutable version (Merkle root over its record hashes); operator or curator.
    function registerVersion(uint256 datanetId, uint256 number, bytes32 merkleRoot, uint64 recordCount) external {
        Datanet storage d = _datanet(datanetId);
        if (!hasRole(OPERATOR_ROLE, msg.sender) && !isCurator[datanetId][msg.sender]) revert NotCurator(msg.sender);
        if (merkleRoot == bytes32(0)) revert EmptyRoot();
        Version storage v = versions[datanetId][number];
        if (v.merkleRoot != bytes32(0)) revert VersionExists(number);
        versions[datanetId][number] = Version(merkleRoot, recordCount, uint64(block.timestamp));
        d.versionCount += 1;
        emit VersionRegistered(datanetId, number, merkleRoot, recordCount);
    }

    function _datanet(uint256 datanetId) private view returns (Datanet storage d) {
        d = datanets[datanetId];
        if (!d.exists) revert UnknownDatanet(datanetId);
    }
}
