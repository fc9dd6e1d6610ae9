// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

interface IClaim {
    function claim(address account, uint256 cumulative, bytes32[] calldata proof) external;
}

/// @notice TEST ONLY: a token whose transfers call back into the distributor to claim twice.
contract ReentrantToken is ERC20 {
    address public target;
    bytes public reenterCall;
    bool public reentered;
    bool public reentrySucceeded;
    bytes public reentryError;

    constructor() ERC20("Evil", "EVIL") {
        _mint(msg.sender, 1_000_000 ether);
    }

    function arm(address target_, bytes calldata call_) external {
        target = target_;
        reenterCall = call_;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (from == target && target != address(0) && !reentered) {
            reentered = true;
            (bool ok, bytes memory err) = target.call(reenterCall);
            reentrySucceeded = ok;
            reentryError = err;
        }
    }
}
