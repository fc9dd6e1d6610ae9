// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title OPEN, the Model Factory token: fixed supply of 1,000,000,000, with votes and permits.
/// @notice The whole supply is minted once to `holder` (the treasury); there is no mint function.
contract OpenToken is ERC20, ERC20Permit, ERC20Votes {
    uint256 public constant SUPPLY = 1_000_000_000 ether;

    error ZeroHolder();

    constructor(address holder) ERC20("Open", "OPEN") ERC20Permit("Open") {
        if (holder == address(0)) revert ZeroHolder();
        _mint(holder, SUPPLY);
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        super._update(from, to, value);
    }

    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
