// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {DatanetRegistry} from "../../DatanetRegistry.sol";
import {InvariantTest, MockToken} from "./Base.sol";
import {DatanetRegistryHandler} from "./DatanetRegistryHandler.sol";

/// Invariants of stakes over random sequences of stakes, decisions (direct and signed), slashes, releases, time
/// and governance changes of the terms and the bond period (the handler checks each call's outcome as it goes).
contract DatanetRegistryInvariants is InvariantTest {
    DatanetRegistry internal reg;
    MockToken internal token;
    DatanetRegistryHandler internal handler;
    address internal constant ADMIN = address(0xAD);
    address internal constant TREASURY = address(0x7EA5);

    function setUp() public {
        vm.warp(1_800_000_000);
        token = new MockToken();
        reg = new DatanetRegistry(IERC20(address(token)), TREASURY, ADMIN, address(this), 1 days);
        handler = new DatanetRegistryHandler(reg, token, TREASURY, ADMIN);
        address[] memory curators = new address[](1);
        curators[0] = handler.curator();
        reg.createDatanet(handler.DATANET(), address(0x0E), curators, 1e18, 2_500);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](7);
        selectors[0] = handler.stake.selector;
        selectors[1] = handler.decide.selector;
        selectors[2] = handler.slashAccepted.selector;
        selectors[3] = handler.release.selector;
        selectors[4] = handler.warp.selector;
        selectors[5] = handler.setBondSeconds.selector;
        selectors[6] = handler.setTerms.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    /// Stakes are conserved: every token staked is held by the registry, or went to the treasury, or back to
    /// its staker; the registry holds exactly the pending stakes and the accepted stakes still bonded.
    function invariant_stakesConserved() public view {
        uint256 held = token.balanceOf(address(reg));
        vm.assertEq(held, handler.locked(), "registry != pending + bonded stakes");
        uint256 back;
        for (uint256 i; i < handler.STAKERS(); ++i) {
            vm.assertEq(token.balanceOf(handler.stakers(i)), handler.returned(i), "staker balance != what came back");
            back += handler.returned(i);
        }
        vm.assertEq(token.balanceOf(TREASURY), handler.toTreasury(), "treasury != slashed");
        vm.assertEq(handler.staked(), held + handler.toTreasury() + back, "tokens created or lost");
    }

    /// Each stake's state is one the rules allow, and its tokens are where that state says: pending and bonded
    /// stakes are still held, rejected, released and slashed ones paid out once in full.
    function invariant_stakeStates() public view {
        uint256 held;
        for (uint256 k; k < handler.stakeCount(); ++k) {
            bytes32 h = handler.hashes(k);
            (,, uint128 amount, DatanetRegistry.StakeStatus status, uint64 bondedUntil, DatanetRegistry.Bond bond) =
                reg.stakes(handler.DATANET(), h);
            if (status == DatanetRegistry.StakeStatus.Pending || status == DatanetRegistry.StakeStatus.Rejected) {
                vm.assertTrue(bond == DatanetRegistry.Bond.None, "pending/rejected stake with a bond");
            } else {
                vm.assertTrue(status == DatanetRegistry.StakeStatus.Accepted, "stake never made");
                vm.assertTrue(bond != DatanetRegistry.Bond.None, "accepted stake without a bond state");
            }
            if (bond == DatanetRegistry.Bond.Bonded) vm.assertTrue(bondedUntil > 0, "bonded with no end");
            bool stillHeld = status == DatanetRegistry.StakeStatus.Pending || bond == DatanetRegistry.Bond.Bonded;
            vm.assertEq(handler.paidOut(h), stillHeld ? 0 : amount, "stake paid out wrongly");
            if (stillHeld) held += amount;
        }
        vm.assertEq(token.balanceOf(address(reg)), held, "registry != sum of held stakes");
    }
}

/// Single-call properties, fuzzed.
contract DatanetRegistryFuzz is InvariantTest {
    DatanetRegistry internal reg0;

    function setUp() public {
        reg0 = new DatanetRegistry(IERC20(address(new MockToken())), address(0x7EA5), address(this), address(this), 0);
    }

    /// The split of a rejection or slash never creates or loses a token, and slashes at most the rate.
    function testFuzz_slashAmountsConserve(uint128 amount, uint16 slashBps) public view {
        slashBps = uint16(bound(slashBps, 0, 10_000));
        (uint128 slashed, uint128 returned) = reg0.slashAmounts(amount, slashBps);
        vm.assertEq(uint256(slashed) + returned, amount, "split != amount");
        vm.assertLe(uint256(slashed) * 10_000, uint256(amount) * slashBps, "slashed above the rate");
    }

    /// Within the bond an accepted stake can be slashed but not released; from its end, released but not slashed.
    function testFuzz_bondWindow(uint64 bondSeconds, uint64 wait, uint128 amount, uint16 slashBps) public {
        vm.warp(1_800_000_000);
        bondSeconds = uint64(bound(bondSeconds, 1, 365 days));
        wait = uint64(bound(wait, 0, 2 * uint256(bondSeconds)));
        amount = uint128(bound(amount, 1, 1e27));
        slashBps = uint16(bound(slashBps, 0, 10_000));
        MockToken token = new MockToken();
        DatanetRegistry reg = new DatanetRegistry(IERC20(address(token)), address(0x7EA5), address(this), address(this), bondSeconds);
        address[] memory curators = new address[](1);
        curators[0] = address(this);
        reg.createDatanet(1, address(this), curators, 0, slashBps);
        token.mint(address(this), amount);
        token.approve(address(reg), amount);
        reg.stake(1, bytes32("c"), address(0xC0), amount);
        reg.accept(1, bytes32("c"));
        vm.warp(block.timestamp + wait);
        if (wait < bondSeconds) {
            vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.BondRunning.selector, bytes32("c"), uint64(1_800_000_000) + bondSeconds));
            reg.release(1, bytes32("c"));
            reg.slashAccepted(1, bytes32("c"));
            vm.assertEq(token.balanceOf(address(0x7EA5)), uint256(amount) * slashBps / 10_000, "slashed amount");
        } else {
            vm.expectRevert(abi.encodeWithSelector(DatanetRegistry.BondOver.selector, bytes32("c"), uint64(1_800_000_000) + bondSeconds));
            reg.slashAccepted(1, bytes32("c"));
            reg.release(1, bytes32("c"));
            vm.assertEq(token.balanceOf(address(this)), amount, "released amount");
        }
        vm.assertEq(token.balanceOf(address(reg)), 0, "registry kept tokens");
    }
}
