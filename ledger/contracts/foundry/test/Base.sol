// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @dev The few cheatcodes these tests use. forge-std is not used: the npm `forge-std` (1.1.2, an unofficial
/// 2022 copy) imports `ds-test/test.sol` without shipping it, and nothing but npm is reachable here. The
/// assertions are forge's own cheatcodes (`vm.assert*`), which revert with the message on failure.
interface Vm {
    function warp(uint256 timestamp) external;
    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function expectRevert(bytes4 selector) external;
    function expectRevert(bytes calldata revertData) external;
    function assume(bool condition) external pure;
    function assertTrue(bool condition, string calldata error) external pure;
    function assertEq(uint256 left, uint256 right, string calldata error) external pure;
    function assertEq(bytes32 left, bytes32 right, string calldata error) external pure;
    function assertLe(uint256 left, uint256 right, string calldata error) external pure;
    function assertGe(uint256 left, uint256 right, string calldata error) external pure;
}

abstract contract Cheats {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @dev forge-std's `bound`, without its logging: maps any x into [lo, hi] so no fuzz input is wasted.
    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        if (hi < lo) revert("bound: hi < lo");
        uint256 size = hi - lo + 1;
        if (size == 0) return x; // the whole uint256 range
        return lo + (x % size);
    }

    /// @dev A revert's selector must be the expected one (there is no bytes4 assertion cheatcode).
    function assertSel(bytes4 got, bytes4 want, string memory error) internal pure {
        vm.assertEq(bytes32(got), bytes32(want), error);
    }

    /// @dev The 4-byte selector of revert data (zero when the revert carried no data).
    function selectorOf(bytes memory err) internal pure returns (bytes4 sel) {
        if (err.length >= 4) sel = bytes4(err);
    }
}

/// @dev What forge reads from an invariant test contract (the same ABI as forge-std's StdInvariant).
abstract contract InvariantTest is Cheats {
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address[] private _targetContracts;
    FuzzSelector[] private _targetSelectors;

    function targetContract(address target) internal {
        _targetContracts.push(target);
    }

    function targetSelector(FuzzSelector memory s) internal {
        _targetSelectors.push(s);
    }

    function targetContracts() public view returns (address[] memory) {
        return _targetContracts;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetSelectors;
    }
}

/// @dev OPEN stands in as a plain ERC-20 that the handlers mint; the contracts only use transfer/transferFrom.
contract MockToken is ERC20 {
    constructor() ERC20("Mock OPEN", "mOPEN") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
