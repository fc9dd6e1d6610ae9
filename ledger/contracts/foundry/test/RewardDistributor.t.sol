// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {RewardDistributor} from "../../RewardDistributor.sol";
import {InvariantTest, MockToken} from "./Base.sol";
import {RewardDistributorHandler} from "./RewardDistributorHandler.sol";

/// Invariants of cumulative claims over random sequences of epochs, claims, batches, stale proofs, sweeps and
/// donations (the handler checks each call's exact outcome as it goes).
contract RewardDistributorInvariants is InvariantTest {
    RewardDistributor internal rd;
    MockToken internal token;
    RewardDistributorHandler internal handler;
    address internal constant ADMIN = address(0xAD);
    address internal constant TREASURY = address(0x7EA5);

    function setUp() public {
        vm.warp(1_800_000_000);
        token = new MockToken();
        address operator = address(0x09E7);
        rd = new RewardDistributor(
            IERC20(address(token)), TREASURY, ADMIN, operator, ADMIN, RewardDistributor.FeeSplit(7_000, 2_000, 1_000)
        );
        handler = new RewardDistributorHandler(rd, token, operator, TREASURY);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](7);
        selectors[0] = handler.publish.selector;
        selectors[1] = handler.claim.selector;
        selectors[2] = handler.claimMany.selector;
        selectors[3] = handler.claimStale.selector;
        selectors[4] = handler.warp.selector;
        selectors[5] = handler.sweep.selector;
        selectors[6] = handler.donate.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    /// What is claimed in a generation never exceeds what was funded in it, and equals the sum of the accounts'
    /// claimed totals.
    function invariant_claimedNeverExceedsFunded() public view {
        (uint96 funded, uint96 claimed,, uint24 gen) = rd.state();
        vm.assertLe(claimed, funded, "claimed > funded");
        uint256 sum;
        for (uint256 i; i < handler.N(); ++i) sum += rd.claimed(gen, handler.accounts(i));
        vm.assertEq(sum, claimed, "state.claimed != sum of the accounts' claimed totals");
        vm.assertLe(handler.paidOut() + handler.swept(), handler.fundedIn(), "paid out more than was funded");
    }

    /// No account is paid twice for one total: what it holds is, over every generation, exactly the highest
    /// cumulative total it claimed, never more than any published total.
    function invariant_noAccountPaidTwice() public view {
        (,,, uint24 gen) = rd.state();
        for (uint256 i; i < handler.N(); ++i) {
            address account = handler.accounts(i);
            uint256 total;
            for (uint24 g; g <= gen; ++g) {
                uint256 c = rd.claimed(g, account);
                vm.assertLe(c, handler.maxPublishedCumulative(), "claimed beyond any published total");
                total += c;
            }
            vm.assertEq(IERC20(address(token)).balanceOf(account), total, "account holds more than its claimed totals");
        }
        for (uint256 i; i < handler.N(); ++i) {
            vm.assertLe(rd.claimed(gen, handler.accounts(i)), handler.cumulative(i), "claimed beyond its current total");
        }
    }

    /// The contract's balance covers what is still outstanding (funded - claimed), exactly, plus donations; the
    /// treasury got exactly what sweeps left.
    function invariant_balanceCoversOutstanding() public view {
        (uint96 funded, uint96 claimed,,) = rd.state();
        uint256 balance = token.balanceOf(address(rd));
        vm.assertGe(balance, uint256(funded) - claimed, "balance below what is outstanding");
        vm.assertEq(balance, uint256(funded) - claimed + handler.donated(), "balance != outstanding + donations");
        vm.assertEq(token.balanceOf(TREASURY), handler.swept(), "treasury != swept");
        vm.assertEq(handler.fundedIn(), handler.paidOut() + handler.swept() + funded - claimed, "tokens not conserved");
    }
}

/// Single-call properties, fuzzed.
contract RewardDistributorFuzz is InvariantTest {
    RewardDistributor internal rd;
    MockToken internal token;
    address internal constant OPERATOR = address(0x09E7);

    function setUp() public {
        vm.warp(1_800_000_000);
        token = new MockToken();
        rd = new RewardDistributor(
            IERC20(address(token)), address(0x7EA5), address(0xAD), OPERATOR, address(0xAD),
            RewardDistributor.FeeSplit(7_000, 2_000, 1_000)
        );
    }

    /// A one-leaf tree (root = leaf, empty proof): the claim pays the total once, the replay reverts, and a
    /// higher total in the next epoch pays only the difference.
    function testFuzz_claimOncePerTotal(address account, uint96 first, uint96 more, address submitter) public {
        vm.assume(account != address(0) && account != address(rd) && account != OPERATOR);
        first = uint96(bound(first, 1, 1e27));
        more = uint96(bound(more, 1, 1e27));
        _publish(1, rd.leaf(account, first), first);
        bytes32[] memory none = new bytes32[](0);
        vm.prank(submitter);
        rd.claim(account, first, none);
        vm.assertEq(token.balanceOf(account), first, "first claim");
        vm.expectRevert(abi.encodeWithSelector(RewardDistributor.AlreadyClaimed.selector, account, uint256(first)));
        rd.claim(account, first, none);
        _publish(2, rd.leaf(account, uint256(first) + more), uint256(first) + more);
        rd.claim(account, uint256(first) + more, none);
        vm.assertEq(token.balanceOf(account), uint256(first) + more, "second claim pays the difference");
        (uint96 funded, uint96 claimed,,) = rd.state();
        vm.assertEq(claimed, funded, "everything funded was claimed");
    }

    /// A total the funding does not cover is refused, whatever the proof.
    function testFuzz_claimBeyondFundingReverts(address account, uint96 cum, uint96 funded) public {
        vm.assume(account != address(0));
        cum = uint96(bound(cum, 2, 1e27));
        funded = uint96(bound(funded, 1, cum - 1));
        _publish(1, rd.leaf(account, cum), funded);
        vm.expectRevert(RewardDistributor.ExceedsFunding.selector);
        rd.claim(account, cum, new bytes32[](0));
    }

    function _publish(uint256 epochId, bytes32 root, uint256 funded) private {
        (uint96 already,,,) = rd.state();
        token.mint(OPERATOR, funded - already);
        vm.startPrank(OPERATOR);
        token.approve(address(rd), funded - already);
        rd.publishEpoch(epochId, 0, root, funded, uint64(block.timestamp + 1 days));
        vm.stopPrank();
    }
}
