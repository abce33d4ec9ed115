/* Expands T(slot, k) for every target of every slot in use: each slot gets
 * its own disjoint set of programs. */
T(0, 0) T(0, 1) T(0, 2)
#if FARM_SLOTS > 1
T(1, 0) T(1, 1) T(1, 2)
#endif
#if FARM_SLOTS > 2
T(2, 0) T(2, 1) T(2, 2)
#endif
#if FARM_SLOTS > 3
T(3, 0) T(3, 1) T(3, 2)
#endif
