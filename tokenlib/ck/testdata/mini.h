/* A tiny header exercising every expression form gen.go understands. */
#define CK_TRUE 1
#define CK_UNAVAILABLE_INFORMATION (~0UL)
#define CKF_ARRAY_ATTRIBUTE 0x40000000UL
#define CKA_OLD_NAME 0x00000180UL /* Deprecated */
#define CKA_NEW_NAME 0x00000180UL
#define CKA_ALIAS CKA_NEW_NAME
#define CKA_TEMPLATE (CKF_ARRAY_ATTRIBUTE|0x00000211UL)
#define CKR_OK 0UL
#define CKR_TEN 10
# define CKR_TEN 10
#define NOT_OURS 7
