// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title Fine-tuned models, registered once per adapter hash.
/// @notice The record ties an adapter (sha256 of its weights) to the base model, the Datanet version root
/// it was trained on and the root of its per-contributor attribution weights.
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

    error AlreadyRegistered(bytes32 adapterHash);
    error ZeroAddress();
    error EmptyHash();
    error BaseModelTooLong(uint256 length);

    uint256 public constant MAX_BASE_MODEL_LENGTH = 200;

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

    function getModel(bytes32 adapterHash) external view returns (Model memory) {
        return _models[adapterHash];
    }

    function isRegistered(bytes32 adapterHash) external view returns (bool) {
        return _models[adapterHash].registeredAt != 0;
    }
}
