// @stage 9
//! (being written: see /work/coord/stage9-design.md)
// @end
