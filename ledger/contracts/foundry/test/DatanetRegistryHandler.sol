// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {DatanetRegistry} from "../../DatanetRegistry.sol";
import {Cheats, MockToken} from "./Base.sol";

/// @dev Drives DatanetRegistry as stakers, curators (directly and by EIP-712 signature) and governance do:
/// stakes, accepts, rejects, slashes and releases of accepted stakes, time passing, new terms and bond periods.
/// Every call states its expected outcome (the exact transfers, or the revert) and fails the run otherwise;
/// ghost totals feed the invariants in DatanetRegistry.t.sol.
contract DatanetRegistryHandler is Cheats {
    uint256 public constant DATANET = 7;
    uint256 public constant STAKERS = 3;
    uint256 internal constant CURATOR_KEY = 0xC0FFEE;
    uint16 internal constant BPS = 10_000;

    DatanetRegistry public immutable reg;
    MockToken public immutable token;
    address public immutable treasury;
    address public immutable governance;
    address public immutable curator;
    address[STAKERS] public stakers;

    bytes32[] public hashes; // every stake made, in order
    mapping(bytes32 => uint256) public paidOut; // tokens a stake has returned to its staker or the treasury

    // Ghosts.
    uint256 public staked; // tokens locked by stakes
    uint256 public toTreasury; // slashed by rejections and slashes of accepted stakes
    uint256[STAKERS] public returned; // back to each staker (rejection rest, slash rest, releases)
    uint256 public locked; // what the registry should hold: pending stakes + accepted stakes still bonded

    constructor(DatanetRegistry reg_, MockToken token_, address treasury_, address governance_) {
        reg = reg_;
        token = token_;
        treasury = treasury_;
        governance = governance_;
        curator = vm.addr(CURATOR_KEY);
        for (uint256 i; i < STAKERS; ++i) stakers[i] = address(uint160(0x57A0 + i));
    }

    function stakeCount() external view returns (uint256) {
        return hashes.length;
    }

    function stakerIndex(address who) public view returns (uint256) {
        for (uint256 i; i < STAKERS; ++i) if (stakers[i] == who) return i;
        revert("not a staker");
    }

    // --- actions -------------------------------------------------------------------------------

    /// A staker locks 0..1e27 on a new contribution; below the minimum it must revert StakeTooSmall.
    function stake(uint256 who, uint256 amount, address contributor) external {
        if (contributor == address(0)) contributor = address(0xC0);
        address staker = stakers[who % STAKERS];
        uint128 amt = uint128(bound(amount, 0, 1e27));
        (,,, uint128 minStake,,) = reg.datanets(DATANET);
        bytes32 h = keccak256(abi.encode(hashes.length, amount));
        token.mint(staker, amt);
        vm.startPrank(staker);
        token.approve(address(reg), amt);
        try reg.stake(DATANET, h, contributor, amt) {
            vm.assertTrue(amt >= minStake, "stake: below the minimum accepted");
            hashes.push(h);
            staked += amt;
            locked += amt;
        } catch (bytes memory err) {
            assertSel(selectorOf(err), DatanetRegistry.StakeTooSmall.selector, "stake: unexpected revert");
            vm.assertTrue(amt < minStake, "stake: refused at or above the minimum");
            token.transfer(address(0xdead), amt); // keep the staker's balance equal to what came back to it
        }
        vm.stopPrank();
    }

    /// A curator (or, when `outsider`, someone who is not one) accepts or rejects stake `pick`, directly or by
    /// a relayed signature.
    function decide(uint256 pick, bool accept, bool bySig, bool outsider) external {
        if (hashes.length == 0) return;
        bytes32 h = hashes[pick % hashes.length];
        (, address staker, uint128 amount, DatanetRegistry.StakeStatus status,,) = reg.stakes(DATANET, h);
        (, uint16 slashBps,,,,) = reg.datanets(DATANET);
        uint64 bondSeconds = reg.bondSeconds();
        uint256 treasuryBefore = token.balanceOf(treasury);
        uint256 stakerBefore = token.balanceOf(staker);
        (bool ok, bytes memory err) = _tryDecide(h, accept, bySig, outsider);
        if (!ok) {
            if (outsider) assertSel(selectorOf(err), DatanetRegistry.NotCurator.selector, "decide: expected NotCurator");
            else assertSel(selectorOf(err), DatanetRegistry.NotPending.selector, "decide: expected NotPending");
            vm.assertTrue(outsider || status != DatanetRegistry.StakeStatus.Pending, "decide: pending stake refused");
            return;
        }
        vm.assertTrue(!outsider, "decide: an outsider decided");
        vm.assertTrue(status == DatanetRegistry.StakeStatus.Pending, "decide: decided twice");
        if (accept) {
            _checkAccepted(h, staker, amount, bondSeconds, stakerBefore);
            vm.assertEq(token.balanceOf(treasury), treasuryBefore, "accept: treasury paid");
        } else {
            (,,, DatanetRegistry.StakeStatus now_,,) = reg.stakes(DATANET, h);
            vm.assertTrue(now_ == DatanetRegistry.StakeStatus.Rejected, "reject: status");
            uint256 slashed = uint256(amount) * slashBps / BPS;
            _paid(h, stakerIndex(staker), slashed, amount - slashed);
            vm.assertEq(token.balanceOf(treasury) - treasuryBefore, slashed, "reject: slashed amount");
            vm.assertEq(token.balanceOf(staker) - stakerBefore, amount - slashed, "reject: returned amount");
        }
    }

    function _tryDecide(bytes32 h, bool accept, bool bySig, bool outsider) private returns (bool ok, bytes memory err) {
        if (bySig) {
            bytes memory sig = _sign(outsider ? 0xBAD : CURATOR_KEY, reg.decisionDigest(DATANET, h, accept));
            try reg.decideBySig(DATANET, h, accept, sig) {ok = true;} catch (bytes memory e) {err = e;}
            return (ok, err);
        }
        vm.prank(outsider ? address(0xBAD) : curator);
        if (accept) {
            try reg.accept(DATANET, h) {ok = true;} catch (bytes memory e) {err = e;}
        } else {
            try reg.reject(DATANET, h) {ok = true;} catch (bytes memory e) {err = e;}
        }
    }

    function _checkAccepted(bytes32 h, address staker, uint128 amount, uint64 bondSeconds, uint256 stakerBefore) private {
        (,,, DatanetRegistry.StakeStatus now_, uint64 bondedUntil, DatanetRegistry.Bond bond) = reg.stakes(DATANET, h);
        vm.assertTrue(now_ == DatanetRegistry.StakeStatus.Accepted, "accept: status");
        if (bondSeconds == 0) {
            vm.assertTrue(bond == DatanetRegistry.Bond.Released, "accept: bond 0 not released");
            _paid(h, stakerIndex(staker), 0, amount);
            vm.assertEq(token.balanceOf(staker) - stakerBefore, amount, "accept: release amount");
        } else {
            vm.assertTrue(bond == DatanetRegistry.Bond.Bonded, "accept: not bonded");
            vm.assertEq(bondedUntil, block.timestamp + bondSeconds, "accept: bond end");
            vm.assertEq(token.balanceOf(staker), stakerBefore, "accept: bonded stake paid out");
        }
    }

    /// A curator slashes accepted stake `pick`: only while bonded and before the bond ends.
    function slashAccepted(uint256 pick, bool bySig) external {
        if (hashes.length == 0) return;
        bytes32 h = hashes[pick % hashes.length];
        (, address staker, uint128 amount,, uint64 bondedUntil, DatanetRegistry.Bond bond) = reg.stakes(DATANET, h);
        (, uint16 slashBps,,,,) = reg.datanets(DATANET);
        uint256 treasuryBefore = token.balanceOf(treasury);
        uint256 stakerBefore = token.balanceOf(staker);
        bool ok;
        bytes memory err;
        if (bySig) {
            bytes memory sig = _sign(CURATOR_KEY, reg.slashDigest(DATANET, h));
            try reg.slashAcceptedBySig(DATANET, h, sig) {ok = true;} catch (bytes memory e) {err = e;}
        } else {
            vm.prank(curator);
            try reg.slashAccepted(DATANET, h) {ok = true;} catch (bytes memory e) {err = e;}
        }
        if (!ok) {
            if (bond != DatanetRegistry.Bond.Bonded) {
                assertSel(selectorOf(err), DatanetRegistry.NotBonded.selector, "slash: expected NotBonded");
            } else {
                assertSel(selectorOf(err), DatanetRegistry.BondOver.selector, "slash: expected BondOver");
                vm.assertGe(block.timestamp, bondedUntil, "slash: refused within the bond");
            }
            return;
        }
        vm.assertTrue(bond == DatanetRegistry.Bond.Bonded, "slash: slashed a stake not bonded");
        vm.assertTrue(block.timestamp < bondedUntil, "slash: slashed after the bond ended");
        uint256 slashed = uint256(amount) * slashBps / BPS;
        _paid(h, stakerIndex(staker), slashed, amount - slashed);
        vm.assertEq(token.balanceOf(treasury) - treasuryBefore, slashed, "slash: slashed amount");
        vm.assertEq(token.balanceOf(staker) - stakerBefore, amount - slashed, "slash: returned amount");
    }

    /// Anyone releases accepted stake `pick`: only while bonded and once the bond has ended.
    function release(uint256 pick, address caller) external {
        if (hashes.length == 0) return;
        bytes32 h = hashes[pick % hashes.length];
        (, address staker, uint128 amount,, uint64 bondedUntil, DatanetRegistry.Bond bond) = reg.stakes(DATANET, h);
        uint256 stakerBefore = token.balanceOf(staker);
        vm.prank(caller);
        try reg.release(DATANET, h) {
            vm.assertTrue(bond == DatanetRegistry.Bond.Bonded, "release: released a stake not bonded");
            vm.assertGe(block.timestamp, bondedUntil, "release: released within the bond");
            _paid(h, stakerIndex(staker), 0, amount);
            vm.assertEq(token.balanceOf(staker) - stakerBefore, amount, "release: amount");
        } catch (bytes memory err) {
            if (bond != DatanetRegistry.Bond.Bonded) {
                assertSel(selectorOf(err), DatanetRegistry.NotBonded.selector, "release: expected NotBonded");
            } else {
                assertSel(selectorOf(err), DatanetRegistry.BondRunning.selector, "release: expected BondRunning");
                vm.assertTrue(block.timestamp < bondedUntil, "release: refused after the bond");
            }
        }
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + bound(secs, 0, 3 days));
    }

    /// Governance sets the bond period (0..2 days; 0 releases at accept).
    function setBondSeconds(uint256 secs) external {
        vm.prank(governance);
        reg.setBondSeconds(uint64(bound(secs, 0, 2 days)));
    }

    /// Governance sets the minimum stake (0..1e24) and the slash rate (0..100%).
    function setTerms(uint256 minStake, uint256 slashBps) external {
        vm.prank(governance);
        reg.setDatanetTerms(DATANET, uint128(bound(minStake, 0, 1e24)), uint16(bound(slashBps, 0, BPS)));
    }

    // --- helpers -------------------------------------------------------------------------------

    /// @dev Book a stake's payout; a stake pays out once, all of its amount, never more.
    function _paid(bytes32 h, uint256 si, uint256 slashed, uint256 back) private {
        (,, uint128 amount,,,) = reg.stakes(DATANET, h);
        vm.assertEq(paidOut[h], 0, "a stake paid out twice");
        vm.assertEq(slashed + back, amount, "payout != stake");
        paidOut[h] = amount;
        toTreasury += slashed;
        returned[si] += back;
        locked -= amount;
    }

    function _sign(uint256 key, bytes32 digest) private pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }
}
