// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Fine-tuned models, registered once per adapter hash.
/// @notice The record ties an adapter (sha256 of its weights) to the base model, the Datanet version root
/// it was trained on and the root of its per-contributor attribution weights. The attribution root is
/// written once: at registration when it is known then, else later by `setAttributionRoot` (the weights
/// come from an index built after training, so registration passes zero as a placeholder). Once non-zero
/// it never changes; `getModel(adapterHash).attributionRoot` is the record.
contract ModelRegistry is AccessControl {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");

    struct Model {
        uint256 modelId;
        address developer;
        uint64 registeredAt;
        bytes32 versionRoot;
        bytes32 attributionRoot;
        string baseModel;
    }

    mapping(bytes32 => Model) private _models;
    uint256 public modelCount;

    event ModelRegistered(
        bytes32 indexed adapterHash, uint256 indexed modelId, address indexed developer,
        string baseModel, bytes32 versionRoot, bytes32 attributionRoot
    );

    /// The root of a model's contributor weights: an OpenZeppelin StandardMerkleTree over
    /// (address account, uint256 weight in 1e-18 units), downloadable at `uri`.
    event AttributionRootSet(uint256 indexed modelId, bytes32 indexed adapterHash, bytes32 root, string uri);

    error AlreadyRegistered(bytes32 adapterHash);
    error NotRegistered(bytes32 adapterHash);
    error AttributionRootAlreadySet(bytes32 adapterHash);
    error UriTooLong(uint256 length);
    error ZeroAddress();
    error EmptyHash();
    error BaseModelTooLong(uint256 length);

    uint256 public constant MAX_BASE_MODEL_LENGTH = 200;
    uint256 public constant MAX_URI_LENGTH = 300;

    constructor(address admin, address operator) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(OPERATOR_ROLE, operator);
    }

    function registerModel(
        bytes32 adapterHash, uint256 modelId, string calldata baseModel, bytes32 versionRoot,
        bytes32 attributionRoot, address developer
    ) external onlyRole(OPERATOR_ROLE) {
        if (adapterHash == bytes32(0)) revert EmptyHash();
        if (developer == address(0)) revert ZeroAddress();
        if (bytes(baseModel).length > MAX_BASE_MODEL_LENGTH) revert BaseModelTooLong(bytes(baseModel).length);
        if (_models[adapterHash].registeredAt != 0) revert AlreadyRegistered(adapterHash);
        _models[adapterHash] = Model(modelId, developer, uint64(block.timestamp), versionRoot, attributionRoot, baseModel);
        modelCount += 1;
        emit ModelRegistered(adapterHash, modelId, developer, baseModel, versionRoot, attributionRoot);
    }

    /// @notice Publish a registered model's attribution root, once (the registrar only).
    function setAttributionRoot(bytes32 adapterHash, bytes32 root, string calldata uri)
        external onlyRole(OPERATOR_ROLE)
    {
        if (root == bytes32(0)) revert EmptyHash();
        if (bytes(uri).length > MAX_URI_LENGTH) revert UriTooLong(bytes(uri).length);
        Model storage m = _models[adapterHash];
        if (m.registeredAt == 0) revert NotRegistered(adapterHash);
        if (m.attributionRoot != bytes32(0)) revert AttributionRootAlreadySet(adapterHash);
        m.attributionRoot = root;
        emit AttributionRootSet(m.modelId, adapterHash, root, uri);
    }

    function getModel(bytes32 adapterHash) external view returns (Model memory) {
        return _models[adapterHash];
    }

    function isRegistered(bytes32 adapterHash) external view returns (bool) {
        return _models[adapterHash].registeredAt != 0;
    }
}
