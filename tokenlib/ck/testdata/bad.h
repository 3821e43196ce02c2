#define CKR_A 1UL
#define CKR_A 2UL
